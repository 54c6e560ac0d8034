"""The pruning study docs/RESULTS.md is made from: its sweeps, their commands, the verdict's terms.

  python scripts/results.py --config configs/study/pruning.py:root=runs
  python scripts/results.py --config configs/study/pruning.py:from_csv
  python scripts/run_study.py --config configs/study/pruning.py:root=runs --jobs 2

The last runs the planned sections' sweeps (docs/results/PLAN.md): until all of a
section's points have finished, RESULTS.md lists it with its commands and reads none
of its rows. Each finished sweep's rows are also kept in `keep` (docs/results/kept/
unless given), where a later machine finds them without the workdirs.

`root` is where the sweeps' workdirs are; `from_csv` rebuilds everything from the
merged csv files the first form copied into docs/results/ (no workdirs needed).
A study's workdirs are merged by point name: the seeds of one dataset may have
run as separate sweep commands (one per core), listed here with the command each.
The first round of sweeps' workdirs are gone (a later machine did not keep them); their
rows are `git show 26bef4b:docs/results/NAME_steps.csv`, saved into root as
NAME_earlier_steps.csv. Base runs rerun later to add methods to a seed are checked
against those rows, digit for digit (RESULTS.md says so under each study).
"""
from dit_jax import configlib

_COMMON = ("ft=2000,evals=0+250+500+1000+2000,budgets=h20m50,"
           "methods=random+select_taylor,scratch=,short=")
_SWEEP = "python scripts/sweep.py --config configs/sweeps/prune_ratio.py:"
# the second round of sweeps (its machine kept no workdirs of the first): all five digits seeds
# from new base runs; seeds 0, 1 and 3 evaluate their base run at `at` only
_DIGITS2 = ("data=digits,at=8000,ft=2000,evals=0+250+500+1000+2000,budgets=h20m50,short=,"
            "scratch=,methods=random+select_taylor+head_grad+contrast")
_BASE_EVALS = "base_evals=1000+2000+3000+4000+5000+6000+7000"


JUDGED = range(10, 15)  # the frontier's judged seeds (docs/results/PLAN.md)
JUDGED3 = range(10, 13)  # the headroom's and the n=512 capacity's
STOPCHECK = range(20, 25)  # fresh seeds for PLAN.md's Amendment 5


def _per_seed(config, workdir, seeds):
  """One sweep a seed, (config, workdir) pairs: `config` run at each seed alone
  (seed0=s,seeds=1 gives the points the many-seed command gives), each into
  WORKDIR_sS, so the seeds can run side by side; their rows are merged by point name."""
  sep = "," if ":" in config else ":"
  return tuple((f"{config}{sep}seed0={s},seeds=1", f"{workdir}_s{s}") for s in seeds)


def _planned(sweeps, **entry):
  """A section whose sweeps docs/results/PLAN.md fixed before they ran: `sweeps` are
  (config, workdir) pairs. Until every point of them has finished, RESULTS.md lists
  the section as planned, reading none of its rows."""
  return dict(entry, sweeps=sweeps, workdirs=tuple(w for _, w in sweeps), commands=tuple(
      f"python scripts/sweep.py --config {c} --workdir {w}" for c, w in sweeps))


def _planned_frontier():
  """The judged frontier sweeps (seeds 10-14) and gmm at n=256 (shown, not judged)."""
  sweep = "configs/sweeps/frontier.py:"
  notes = ("Every family from the same seed's training subset, 5 judged seeds; "
           "dominance read as in docs/results/PLAN.md, matched on test_nll and on sample "
           "quality.")
  # said of the sweeps that have run (gmm n=256 has not started)
  ran = (" Ran from a frozen clone through scripts/run_study.py, one seed a sweep, one "
         "sweep per core at nice 10 beside another sweep (tests and editing on and off); "
         "each seed's kept.json names its commit; a sweep stopped midway resumes each "
         "point from its last checkpoint.")
  resumed = (" Seed 10's early_stop ran its first 1,500 steps at 364ab8a and the rest at "
             "7f96061: no training, evaluation or sweep code differs between the two.")
  return {
      "gmm32": _planned(_per_seed(f"{sweep}data=gmm,n=32", "frontier_gmm32", JUDGED),
                        judged="gmm32", notes=notes + ran + resumed,
                        title="Against early stopping: gmm, n=32 (seeds 10-14, judged)"),
      "digits": _planned(
          _per_seed(f"{sweep}data=digits,n=32,steps=8000,at=5000", "frontier_digits", JUDGED),
          judged="digits", notes=notes + ran,
          title="Against early stopping: digits, n=32 (seeds 10-14, judged)"),
      "gmm256": _planned(_per_seed(f"{sweep}data=gmm,n=256", "frontier_gmm256", JUDGED),
                         notes=notes + " Shown, not part of the verdict.",
                         title="Against early stopping: gmm, n=256 (seeds 10-14)"),
      **_stopcheck(sweep),
  }


def _stopcheck(sweep):
  """PLAN.md's Amendment 5: weight decay 1 and the quarter-width model at step 4,000
  against the tracker stop, on fresh seeds."""
  args = "n=32,steps=5000,at=4500,methods=,decays=1,widths=0.25,compare=4000"
  notes = ("Fresh seeds for hypotheses read off the judged frontiers' tables against the "
           "tracker stop (docs/results/PLAN.md, Amendment 5): early_stop evaluated every "
           "500 steps to 5,000, weight decay 1 and the quarter-width model at 4,000 and "
           "5,000.")
  return {
      f"stopcheck_{name}": _planned(
          _per_seed(f"{sweep}data={data},{args}", f"stopcheck_{name}", STOPCHECK),
          notes=notes, confirm=confirm,
          title=f"Against the tracker stop: {data}, n=32 (seeds 20-24, judged)")
      for name, data, confirm in (
          ("gmm32", "gmm", ("wd1 step 4000",)),
          ("digits", "digits", ("wd1 step 4000", "w0.25 step 4000")))}


def get_config(arg=None):
  a = configlib.parse_arg(arg, root="runs", from_csv=False, out="docs", keep="")
  c = configlib.ml_collections.ConfigDict()
  c.ours = "select_taylor"  # chosen on the exploration seed (100) before seeds 0-4 ran
  c.budget = "h20m50"  # the equal budget of the verdict: 20% of heads, 50% of MLP units
  c.fts = (500, 2000)  # fine-tuning steps the verdict and the target are judged at
  c.tables = (0, 500, 2000)  # fine-tuning steps a table is printed at (0: just pruned)
  c.from_csv = a.from_csv
  gmm = f"data=gmm,at=6000,base_evals=1000+2000+3000+4000+5000,{_COMMON}"
  digits = f"data=digits,at=8000,base_evals=1000+2000+3000+4000+5000+6000+7000,{_COMMON}"
  full = ("budgets=h20+h20m50,methods=random+magnitude+head_grad+contrast+select_taylor,"
          "scratch=h20m50,short=h20")
  four = "methods=random+select_taylor+head_grad+contrast"
  c.studies = {
      "gmm": dict(workdirs=("gmm_earlier_steps.csv",), commands=(
          f"{_SWEEP}{gmm.replace(_COMMON, 'ft=2000,evals=0+250+500+1000+2000,' + full)},"
          "seeds=1 --workdir sweep_gmm",
          f"{_SWEEP}{gmm},seed0=1,seeds=2 --workdir sweep_gmm_b",
          f"{_SWEEP}{gmm},seed0=3,seeds=1 --workdir sweep_gmm_c",
          f"{_SWEEP}{gmm},seed0=3,seeds=2 --workdir sweep_gmm_c",
          f"{_SWEEP}{gmm.replace('methods=random+select_taylor', four)},seed0=1,seeds=2 "
          "--workdir sweep_gmm_b",
          f"{_SWEEP}{gmm.replace('methods=random+select_taylor', four)},seed0=3,seeds=2 "
          "--workdir sweep_gmm_c",
          "# the rows of these workdirs: gmm_earlier_steps.csv"), earlier=(),
          title="Gaussian mixture (K=8, d=64), n=32, base 6,000 steps"),
      "digits": dict(workdirs=tuple(f"digits_{s}" for s in ("s2", "s4", "add_s0", "add_s1",
                                                           "add_s3")), commands=(
          f"{_SWEEP}{_DIGITS2},{_BASE_EVALS},seed0=2,seeds=1 --workdir digits_s2",
          f"{_SWEEP}{_DIGITS2},{_BASE_EVALS},seed0=4,seeds=1 --workdir digits_s4",
          f"{_SWEEP}{_DIGITS2},base_evals=,seed0=0,seeds=1 --workdir digits_add_s0",
          f"{_SWEEP}{_DIGITS2},base_evals=,seed0=1,seeds=1 --workdir digits_add_s1",
          f"{_SWEEP}{_DIGITS2},base_evals=,seed0=3,seeds=1 --workdir digits_add_s3",
          "# each ran in parts, resumed by the same command with more methods (finished "
          "points are read, not rerun): digits_s2 and digits_s4 first with a control inside "
          "each point (stopped after select_taylor; it ran after the point's own evaluations "
          "and changed none of them), digits_add_s0 and _s1 first as control=0,"
          "methods=head_grad+contrast",
          "# the earlier rows (digits_earlier_steps.csv), the first round of sweeps:",
          f"{_SWEEP}{digits.replace(_COMMON, 'ft=2000,evals=0+250+500+1000+2000,' + full)},"
          "seeds=1 --workdir sweep_digits  (stopped after the h20 points)",
          f"{_SWEEP}{digits},seeds=1 --workdir sweep_digits",
          f"{_SWEEP}{digits},seed0=1,seeds=1 --workdir sweep_digits_b",
          f"{_SWEEP}{digits},seed0=3,seeds=1 --workdir sweep_digits_c"),
          earlier=("digits_earlier_steps.csv",),
          title="digits (8x8), n=32, base 8,000 steps"),
  }
  explore = "data=digits,at=8000,seed0=100,seeds=1,base_evals=2000+4000+6000,ft=2000,budgets=h20m50,"
  c.explore = dict(workdirs=("explore_earlier_steps.csv",), earlier=(), commands=(
      f"{_SWEEP}{explore}evals=250+500+1000+2000,methods=random+contrast,scratch=,short="
      " --workdir explore_digits",
      f"{_SWEEP}{explore}evals=0+250+500+1000+2000,"
      "methods=random+select_taylor+specific+contrast_smallt+head_grad,scratch=,short="
      " --workdir explore_digits2  (its base-s100 and original-s100 copied from explore_digits)"),
      title="ideas tried on one exploration seed (digits, seed 100)")
  grid = "python scripts/sweep.py --config configs/sweeps/capacity_grid.py:data=gmm,steps=6000,"
  gmm_cap = dict(
      grid=tuple(f"grid_gmm_{x}" for x in "bcdefghij") + ("grid_gmm_wide_s0", "grid_gmm_wide_s1"),
      search=("cap_gmm",),
      earlier=("grid_gmm_a",), fts=(500,), data="gmm", oracle="excess",
      tols=(0.05, 0.1, 0.25, 0.5),  # W*(5%), and wider ones for its shape
      earlier_title="The large-n rows trained 3,000 steps (their first run, for comparison)",
      commands=(f"{grid}ns=32+128 --workdir grid_gmm_b",
                f"{grid}ns=512,widths=1+0.75+0.5 --workdir grid_gmm_c",
                f"{grid}ns=512,widths=0.25+0.125 --workdir grid_gmm_d",
                f"{grid}ns=16384,widths=1+0.5+0.125 --workdir grid_gmm_e",
                f"{grid}ns=16384,widths=0.75+0.25 --workdir grid_gmm_f",
                f"{grid}ns=2048,widths=0.75+0.25 --workdir grid_gmm_g",
                f"{grid}ns=2048,widths=1+0.5+0.125 --workdir grid_gmm_h",
                f"{grid}ns=16384,widths=1+0.5+0.125,seed0=1 --workdir grid_gmm_i",
                f"{grid}ns=16384,widths=0.75+0.25,seed0=1 --workdir grid_gmm_j",
                f"{grid}ns=16384,widths=2+1.5,nll=0 --workdir grid_gmm_wide_s0",
                f"{grid}ns=16384,widths=2+1.5,nll=0,seed0=1 --workdir grid_gmm_wide_s1",
                f"{_SWEEP}data=gmm,at=6000,base_evals=,ft=500,evals=500,budgets=cap,"
                "methods=random,scratch=,seeds=3 --workdir cap_gmm",
                "# the earlier rows: ...capacity_grid.py:data=gmm,ns=16384+2048,steps=3000 "
                "--workdir grid_gmm_a"),
      title="Capacity the ground-truth score needs (gmm, K=8, d=64)",
      notes=("Each grid cell trains `tiny/2` from scratch, 6,000 steps, with a fraction of "
             "its heads and MLP units per block (head size and hidden size fixed; one head "
             "at least): one seed, two at n=16384 (the row W* is read from; a cell's numbers "
             "are the mean over its seeds). The first run of the n=2048 and 16384 rows "
             "trained 3,000 steps; it is kept below for comparison, not merged. Widths 1.5 "
             "and 2 (6 and 8 heads of the same head size, 768 and 1,024 MLP units) widen the "
             "model past its full size at n=16384 only, so that W* is read against the "
             "widest model the grid has; they ran later (code da38454, without likelihood "
             "points, one seed per core beside a niced sweep and tests) and were merged "
             "into the csv copies. The search "
             "starts from a memorizing base (n=32, 6,000 steps), cuts heads and then MLP "
             "units by `contrast` scores, fits each candidate 300 steps to the true score on "
             "draws of the density (capacity_fit=gt: no split is read) and keeps the smallest "
             "cut whose probe loss stays within 5% of the equally fitted unpruned model's; "
             "the chosen model, `random` at the same per-axis cut and the unpruned control "
             "are then fine-tuned 500 steps on the training set."))
  grid = ("python scripts/sweep.py --config configs/sweeps/capacity_grid.py:data=digits,"
          "steps=6000,")
  cap = (f"{_SWEEP}data=digits,at=8000,ft=2000,evals=0+250+500+1000+2000,budgets=cap,short=,"
         f"scratch=,methods=random,{_BASE_EVALS},seeds=1")
  digits_cap = dict(
      grid=tuple(f"grid_digits_{x}" for x in "abcd"),
      search=("digits_s2", "digits_s4", "digits_add_s0"),
      fts=(500, 2000), data="digits", oracle="heldout",
      # the held-out loss includes the noise's irreducible part, so its tolerances are
      # tighter than the excess's; the search itself keeps cuts within 5% of it
      tols=(0.01, 0.02, 0.05), tol=0.05,
      commands=(f"{grid}ns=1041 --workdir grid_digits_a",
                f"{grid}ns=32 --workdir grid_digits_b",
                f"{grid}ns=1041,widths=1+0.5+0.125,seed0=1 --workdir grid_digits_c",
                f"{grid}ns=1041,widths=0.75+0.25,seed0=1 --workdir grid_digits_d",
                f"{cap},seed0=2 --workdir digits_s2",
                f"{cap},seed0=4 --workdir digits_s4",
                f"{cap},seed0=0 --workdir digits_add_s0",
                "# each search point resumes its seed's base run (8,000 steps) of the digits "
                "study above"),
      title="Capacity on digits, without a known density: a proxy oracle",
      notes=("The same grid on digits at n=32 and n=1041 (every image the select (256) "
             "and test (500) splits leave of the 1,797), 6,000 steps; one seed at n=32, two at "
             "n=1041 (the row the proxy is read from; cells are means over seeds). No density "
             "is known, so the proxy oracle is the width where the n=1041 model's held-out "
             "loss (on the select split) stops improving. The search (capacity_fit=select) "
             "starts from the digits study's n=32 base runs (8,000 steps), cuts by `contrast` "
             "scores, fits each "
             "candidate 300 steps on half of the select split and judges it on the other "
             "half's held-out loss, summed over the t-buckets where the unpruned model "
             "generalizes; it assumes that loss measures the score (the select images are "
             "fresh draws of the data distribution, unseen in training), so that held-out "
             "loss differences are differences in the excess over the true score's loss. "
             "Quality (fd, precision) is judged on the test split, which nothing here chose "
             "with."))
  c.capacity = {"capacity": gmm_cap, "capacity_digits": digits_cap}
  frontier = ("python scripts/sweep.py --config configs/sweeps/frontier.py:data=gmm,"
              "seed0=100,seeds=1,methods=random,evals=250+500+1000+2000,decays=0.1,"
              "widths=0.5 --workdir explore_gmm  (stopped with SIGTERM as w0.5 started: "
              "its point has no rows)")
  c.frontier = {"explore_gmm": dict(
      workdirs=("explore_gmm",), commands=(frontier,),
      title="Against early stopping: exploration (gmm, n=32, seed 100; not judged)",
      notes=("One exploration seed, run from a frozen clone at 100d8dc while other jobs "
             "shared the machine: no interval, and nothing here is a verdict. It shaped "
             "docs/results/PLAN.md (matching on sample quality as well as on test_nll); "
             "the judged seeds 10-14 follow that plan."))}
  c.frontier.update(_planned_frontier())
  c.headroom = {"gmm256": _planned(
      _per_seed("configs/sweeps/headroom.py", "headroom_gmm256", JUDGED3),
      title="Headroom for unit choice (gmm, n=256, seeds 10-12)",
      notes=("From each seed's step-4,000 checkpoint: 32 random masks at h20m50, each "
             "fine-tuned 1,000 steps with the same noise, and 8 reruns of mask 0 with other "
             "fine-tuning noise; var(masks) / var(reruns) pooled within seeds, with its "
             "F-distribution 95% interval. Ran at 7f96061 from a frozen clone through "
             "scripts/run_study.py, one seed a sweep, one sweep per core at nice 10 beside "
             "another sweep (tests and editing on and off, sweeps paused during fresh-clone "
             "test runs); a sweep stopped midway resumed each point from its last "
             "checkpoint."))}
  grid512 = _per_seed("configs/sweeps/capacity_grid.py:data=gmm,ns=512,nll=0", "cap512_grid",
                       JUDGED3)
  search512 = _per_seed(
      "configs/sweeps/prune_ratio.py:data=gmm,n=512,at=6000,base_evals=,ft=2000,evals=2000,"
      "budgets=cap,methods=random,scratch=,capacity_fit=train_gt", "cap512_search", JUDGED3)
  cap512 = _planned(grid512 + search512,
      title="Capacity where it can matter (gmm, n=512, seeds 10-12)",
      notes=("Each seed's target is its grid width with the lowest held-out excess at "
             "n=512 (6,000 steps from scratch); the search (capacity_fit=train_gt: "
             "candidates fine-tuned 300 steps on the training images, judged by their "
             "excess) starts from the seed's full-width run at 6,000 steps, then 2,000 "
             "fine-tuning steps beside the control and `random` at the same cut. Ran at "
             "364ab8a from a frozen clone through scripts/run_study.py, one seed a sweep, "
             "one sweep per core at nice 10 (a test suite beside the first 20 minutes; the "
             "search of seed 12 shared both cores with that of seed 11 for its first 25); "
             "their rows are kept in docs/results/kept/."))
  c.capacity_at_n = {"cap512": dict(cap512, grid=tuple(w for _, w in grid512),
                                    search=tuple(w for _, w in search512), n=512, fts=(2000,))}
  # scripts/run_study.py's order: the sweeps the verdict rests on first, seed by seed
  c.plan_order = tuple(
      [f"frontier_{d}_s{s}" for s in JUDGED for d in ("gmm32", "digits")] +
      [f"{w}_s{s}" for w in ("headroom_gmm256", "cap512_grid", "cap512_search")
       for s in JUDGED3] + [f"frontier_gmm256_s{s}" for s in JUDGED] +
      [f"stopcheck_{d}_s{s}" for s in STOPCHECK for d in ("gmm32", "digits")])
  c.capacity_tols = (0.05, 0.1, 0.25)  # tolerances W* is printed at
  c.capacity_tol = 0.05  # the one the search is judged against
  c.machine = ("the 2-core, 24 GiB CPU VM of the project (no GPU), jax 0.10.2 on CPU; "
               "every sweep pinned to one core with taskset, two sweeps at a time (one per "
               "core), and the test suite and editing running alongside on and off")
  c.code = ("the sweeps ran from frozen clones (so that commits made while they ran could "
            "not change them midway): gmm and the exploration seed in the first round of sweeps at "
            "commit afc1142; digits in the second round at 26bef4b, resumed at 492a8c2 (which adds "
            "the sweep's control argument and drops the needless control inside each "
            "point); between the two, commits changed float rounding (e.g. the attention "
            "logits' scaling), so a base run of the first round and its rerun agree "
            "closely but not to the digit, and only points of one run pair. The capacity "
            "sections: the gmm grid's small-n rows and search at 5dd1ccf and b07bad8, its "
            "6,000-step large-n rows, the digits grid and the digits searches of seeds 0 and "
            "4 at f7d3c07, the second seeds of the n=16384 and n=1041 rows at 17e3129; the "
            "digits workdirs' csv rows were then rebuilt from their finished points (read, "
            "not rerun) at the commit that keeps earlier commands' rows")
  c.root = a.root
  c.out = a.out
  # the planned sweeps' kept rows (scripts/run_study.py copies each finished one there)
  c.keep = a.keep or f"{a.out}/results/kept"
  return c
