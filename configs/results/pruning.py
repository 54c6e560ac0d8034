"""What docs/RESULTS.md is made from: the issue-10 sweeps, their commands, the verdict's terms.

  python scripts/results.py --config configs/results/pruning.py:root=/work/runs
  python scripts/results.py --config configs/results/pruning.py:from_csv

`root` is where the sweeps' workdirs are; `from_csv` rebuilds everything from the
merged csv files the first form copied into docs/results/ (no workdirs needed).
A study's workdirs are merged by point name: the seeds of one dataset may have
run as separate sweep commands (one per core), listed here with the command each.
The first session's workdirs are gone (a later machine did not keep them); their rows
are `git show 26bef4b:docs/results/NAME_steps.csv`, saved into root as
NAME_earlier_steps.csv. Base runs rerun later to add methods to a seed are checked
against those rows, digit for digit (RESULTS.md says so under each study).
"""
from dit_jax import configlib

_COMMON = ("ft=2000,evals=0+250+500+1000+2000,budgets=h20m50,"
           "methods=random+select_taylor,scratch=,short=")
_SWEEP = "python scripts/sweep.py --config configs/sweeps/prune_ratio.py:"
# the second session: every method on new seeds; head_grad and contrast (control=0: the
# control and the random and select_taylor points ran in the first) on the old ones
_COMMON2 = ("ft=2000,evals=0+250+500+1000+2000,budgets=h20m50,"
            "methods=random+select_taylor+head_grad+contrast+magnitude,scratch=h20m50,short=")
_ADD = ("ft=2000,evals=0+250+500+1000+2000,budgets=h20m50,short=,control=0,"
        "methods=head_grad+contrast")


def get_config(arg=None):
  a = configlib.parse_arg(arg, root="runs", from_csv=False, out="docs")
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
          "# the rows of these workdirs: gmm_earlier_steps.csv"),
          title="Gaussian mixture (K=8, d=64), n=32, base 6,000 steps"),
      # the first command's h20 rows survive in a copy of its sweep_steps.csv: the second
      # command rewrote the workdir's csv with its own points
      "digits": dict(workdirs=("digits_earlier_steps.csv",) + tuple(
          f"digits_{s}" for s in ("s2", "s4", "add_s0", "add_s1", "add_s3")), commands=(
          f"{_SWEEP}{digits.replace(_COMMON, 'ft=2000,evals=0+250+500+1000+2000,' + full)},"
          "seeds=1 --workdir sweep_digits  (stopped after the h20 points; "
          "sweep_steps.csv copied to sweep_digits_s0_steps_backup.csv)",
          f"{_SWEEP}{digits},seeds=1 --workdir sweep_digits",
          f"{_SWEEP}{digits},seed0=1,seeds=1 --workdir sweep_digits_b  (run as seeds=2, "
          "stopped at the start of seed 2 for time)",
          f"{_SWEEP}{digits},seed0=3,seeds=1 --workdir sweep_digits_c",
          "# the rows above: digits_earlier_steps.csv; the second session's, one per core:",
          f"{_SWEEP}{digits.replace(_COMMON, _COMMON2)},seed0=2,seeds=1 --workdir digits_s2",
          f"{_SWEEP}{digits.replace(_COMMON, _COMMON2)},seed0=4,seeds=1 --workdir digits_s4",
          f"{_SWEEP}{digits.replace(_COMMON, _ADD)},scratch=,seed0=0,seeds=1 "
          "--workdir digits_add_s0",
          f"{_SWEEP}{digits.replace(_COMMON, _ADD)}+magnitude,scratch=h20m50,seed0=1,seeds=1 "
          "--workdir digits_add_s1",
          f"{_SWEEP}{digits.replace(_COMMON, _ADD)},scratch=,seed0=3,seeds=1 "
          "--workdir digits_add_s3"),
          title="digits (8x8), n=32, base 8,000 steps"),
  }
  explore = "data=digits,at=8000,seed0=100,seeds=1,base_evals=2000+4000+6000,ft=2000,budgets=h20m50,"
  c.explore = dict(workdirs=("explore_earlier_steps.csv",), commands=(
      f"{_SWEEP}{explore}evals=250+500+1000+2000,methods=random+contrast,scratch=,short="
      " --workdir explore_digits",
      f"{_SWEEP}{explore}evals=0+250+500+1000+2000,"
      "methods=random+select_taylor+specific+contrast_smallt+head_grad,scratch=,short="
      " --workdir explore_digits2  (its base-s100 and original-s100 copied from explore_digits)"),
      title="ideas tried on one exploration seed (digits, seed 100)")
  c.machine = ("the 2-core, 24 GiB CPU VM of the project (no GPU), jax 0.10.2 on CPU; "
               "every sweep pinned to one core with taskset, two sweeps at a time (one per "
               "core), and the test suite and editing running alongside on and off")
  c.code = ("the sweeps ran from frozen clones (so that commits made while they ran could "
            "not change them midway): the first session's at commit afc1142, the second's "
            "at da8d02e; the base runs the second session reran agree with the first's "
            "to every digit (the 'measured twice' lines below), which is what lets their "
            "points pair")
  c.root = a.root
  c.out = a.out
  return c
