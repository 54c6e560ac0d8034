"""The frontier's reading of early stopping at equal quality, on rows with known answers."""
import math
import os
import re

import numpy as np
import pytest

from dit_jax.study import frontier

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _es_rows(seed, noise=0.0):
  """Quality improves linearly with steps; memorization grows linearly with it."""
  rows = []
  for i, step in enumerate(range(500, 3001, 500)):
    rows.append(dict(method="early_stop", seed=seed, step=step, ft_steps=step,
                     test_nll=2.0 - 0.1 * i, mem_ratio=0.1 * i + noise, nll_gap=0.01 * i,
                     **{"memo_ema/heldout_loss": abs(i - 3) + 1.0, "memo_ema/index": 0.1 * i}))
  return rows


def test_early_stop_is_read_at_the_first_step_of_equal_quality():
  curve = _es_rows(0)
  assert math.isclose(frontier.early_stop_at(curve, 1.85, "mem_ratio"), 0.15)
  assert frontier.early_stop_at(curve, 2.5, "mem_ratio") == 0.0  # the first checkpoint
  assert frontier.early_stop_at(curve, 1.0, "mem_ratio") is None  # better than any


def test_dominance_pairs_by_seed_and_counts_unmatched_points():
  rows = []
  rng = np.random.default_rng(0)
  for seed in range(5):
    rows += _es_rows(seed, noise=0.01 * seed)
    # a point 0.1 below the curve at quality 1.75, and a far better one for seed 4
    q = 1.0 if seed == 4 else 1.75
    rows.append(dict(method="pruned", seed=seed, step=2500, ft_steps=500, test_nll=q,
                     mem_ratio=0.25 + 0.01 * seed - 0.1 + 0.001 * rng.normal(), nll_gap=0.0))
  d = frontier.dominance(rows, frontier.at_ft(rows, "pruned", 500), "mem_ratio")
  assert d["n"] == 4 and d["unmatched"] == 1
  assert abs(d["mean"] + 0.1) < 0.005 and d["half"] < 0.01
  on_curve = frontier.dominance(rows, frontier.at_step(rows, "early_stop", 1500), "mem_ratio")
  assert abs(on_curve["mean"]) < 1e-12 and on_curve["unmatched"] == 0
  md = frontier.table(rows, [("pruned +500", frontier.at_ft(rows, "pruned", 500))])
  assert "lower (better)" in md and "1 seed(s) better than every early_stop checkpoint" in md


def test_stopping_rules_read_only_the_select_split_and_the_tracker():
  rows = _es_rows(0)
  assert frontier.val_stop(rows)(0)["step"] == 2000  # the lowest held-out loss
  assert frontier.tracker_stop(rows, "memo_ema/index", 0.25)(0)["step"] == 2000
  assert frontier.tracker_stop(rows, "memo_ema/index", 9.0)(0)["step"] == 3000  # never crossed
  gap = dict(rows[0], **{"memo_ema/gap": 0.2, "memo_ema/heldout_loss": 0.4})
  assert frontier.tracker_reading(gap, "memo_ema/gap") == 0.5


def test_the_frontier_plot_is_drawn(tmp_path):
  rows = _es_rows(0) + _es_rows(1)
  path = frontier.plot(rows, str(tmp_path / "f.png"), "test")
  assert (tmp_path / "f.png").stat().st_size > 1000 and path.endswith("f.png")


@pytest.mark.loop
def test_the_frontier_sweep_runs_every_family_with_likelihoods(tmp_path, data_dir):
  from dit_jax.study import sweep, sweepdir
  spec = os.path.join(ROOT, "configs", "sweeps", "frontier.py") + ":runlocal,methods=random"
  w = str(tmp_path / "frontier")
  _, step_rows, summary = sweep.run_sweep(spec, w, {"data.data_dir": data_dir})
  methods = {r["method"] for r in sweepdir.read_csv(os.path.join(w, "sweep_steps.csv"))}
  assert methods == {"early_stop", "random", "wd1", "w0.5"}
  for r in step_rows:
    for key in ("test_nll", "train_nll", "nll_gap", "nll_excess", "energy_distance"):
      assert np.isfinite(r[key]), (r["name"], key)
  es = [r["step"] for r in step_rows if r["method"] == "early_stop"]
  assert es == [10, 20]  # every `every` steps, and the end
  # the pruned point starts from early_stop's step-10 checkpoint
  pruned = [r for r in step_rows if r["method"] == "random"]
  assert [r["ft_steps"] for r in pruned] == [5, 10] and pruned[0]["step"] == 15
  assert "tracker_stop" in summary and os.path.exists(os.path.join(w, "sweep.png"))


def test_the_frontier_runs_early_stop_and_pruning_of_every_seed_first():
  from dit_jax import configlib
  spec = configlib.load_config_file(os.path.join(ROOT, "configs", "sweeps", "frontier.py"))
  points = spec.get_sweep("data=gmm,seeds=2,compare=2000+4000+9000")
  names = [p["name"] for p in points]
  assert names[:6] == ["early_stop-s0", "random@h20m50-s0", "head_grad@h20m50-s0",
                       "early_stop-s1", "random@h20m50-s1", "head_grad@h20m50-s1"]
  assert len(names) == 6 + 2 * 5  # three decays and two widths per seed after them
  at = {p["name"]: p["overrides"]["eval.at_steps"] for p in points}
  assert at["early_stop-s1"] == tuple(range(500, 6000, 500))
  assert at["wd0.1-s0"] == at["w0.25-s1"] == (2000, 4000)  # compared steps below the end


def _judged_rows(shift, seeds=5):
  """An early_stop curve per seed (both qualities improve, both memorizations grow),
  a pruned family whose +8000 point sits `shift` below the curve in memorization
  (its +500 point on it), weight decay on the curve and a narrow model above it."""
  rng = np.random.default_rng(seeds)
  rows = []
  for seed in range(seeds):
    for i, step in enumerate(range(500, 6001, 500)):
      rows.append(dict(method="early_stop", budget="frontier", seed=seed, step=step,
                       ft_steps=step, test_nll=3.0 - 0.1 * i, energy_distance=2.0 - 0.1 * i,
                       mem_ratio=0.05 * i, nll_gap=0.1 * i))

    def point(method, budget, step, ft, i, dm):
      noise = 0.002 * rng.normal()
      rows.append(dict(method=method, budget=budget, seed=seed, step=step, ft_steps=ft,
                       test_nll=3.0 - 0.1 * i, energy_distance=2.0 - 0.1 * i,
                       mem_ratio=0.05 * i + dm + noise, nll_gap=0.1 * i + 2 * dm + noise))
    point("random", "h20m50", 4500, 500, 5.5, 0.0)
    point("random", "h20m50", 12000, 8000, 7.5, -shift)
    for step in (2000, 4000):
      point("wd0.1", "frontier", step, step, step / 500 - 1, 0.0)
      point("w0.5", "frontier", step, step, step / 500 - 1.5, 0.08)
  return rows


def test_the_verdict_follows_the_plan_rules_on_rows_with_known_answers():
  gmm, digits = _judged_rows(0.1), _judged_rows(0.1)
  late = dict(next(r for r in gmm if r["method"] == "wd0.1"), step=8000, ft_steps=8000)
  fam = frontier.family_points(gmm + [late])  # 8,000 is not a compared step
  assert [lab for lab, _ in fam["random"]] == ["random @h20m50 +8000"]  # the longest only
  assert [lab for lab, _ in fam["wd0.1"]] == ["wd0.1 step 2000", "wd0.1 step 4000"]
  v = frontier.verdicts({"gmm": gmm, "digits": digits})
  assert v["random"][0] == "beats"
  assert v["wd0.1"][0] == "does not beat"
  assert set(v["wd0.1"][1]["wd0.1 step 4000"].values()) == {"within noise"}
  assert v["w0.5"][0] == "worse"
  # on one dataset only: the rule asks for both
  assert frontier.verdicts({"gmm": gmm, "digits": _judged_rows(0.0)})["random"][0] == \
      "does not beat"
  # one seed gives no interval
  assert frontier.verdicts({"gmm": _judged_rows(0.1, seeds=1)})["random"][0] == "does not beat"
  md = frontier.verdict_table({"gmm": gmm, "digits": digits})
  assert "| random | beats | random @h20m50 +8000 | beats | beats |" in md


def test_the_results_page_states_the_verdict_of_the_judged_sweeps(tmp_path):
  from tests.test_study import _results_documents, _write
  for name, shift in (("g", 0.1), ("d", 0.1), ("x", 0.0)):
    _write(tmp_path, name, [dict(r, data="gmm", name=f"{r['method']}-s{r['seed']}")
                            for r in _judged_rows(shift)])
  from tests.test_headroom import _rows as headroom_rows
  _write(tmp_path, "h", [dict(r, step=4010, budget="h20m50", data="gmm",
                              **{"memo_ema/gt_excess": r["nll_gap"]})
                         for r in headroom_rows(0.0, 1.0)])
  for text, _ in _results_documents(tmp_path, (
      "c.ours, c.budget, c.fts, c.tables, c.studies = 'random', 'h20m50', (500,), (500,), {}",
      "c.headroom = {'gmm256': dict(workdirs=('h',), commands=('cmd',), title='Room', "
      "notes='n')}",
      "c.explore = dict(workdirs=(), commands=(), title='Ideas')",
      "f = lambda w, j: dict(workdirs=(w,), commands=('cmd',), title=w, notes='n', judged=j)",
      "c.frontier = {'g': f('g', 'gmm'), 'd': f('d', 'digits'), "
      "'x': dict(f('x', ''), confirm=('wd0.1 step 2000',))}")):
    verdict = text[text.index("## Verdict"):]
    assert "judged sweeps (digits, gmm)" in verdict  # x is shown, not judged
    assert "| random | beats | random @h20m50 +8000 | beats | beats |" in verdict
    assert "Families that beat early stopping: random." in verdict
    assert ("Headroom (gmm256): nll_gap: within noise: masks do not differ beyond "
            "fine-tuning noise; memo_ema/gt_excess: within noise") in verdict
    assert "## Room" in text and "| nll_gap |" in text
    x = text[text.index("## x"):]
    assert "### Against the tracker stop, unmatched" in x
    confirm = x[x.index("### Judged against the tracker stop"):]
    assert re.search(r"\| wd0\.1 step 2000 \| (beats|does not beat|n/a) \|", confirm)


def _stop_rows(fd_shift, seeds=5):
  """early_stop crossing the tracker's 0.5 at step 3,000 (test_nll 1.5, mem_ratio 0.5),
  and a wd1 point at step 2,000 that is 0.3 better on test_nll, 0.1 lower on mem_ratio
  and `fd_shift` off on fd."""
  rows, rng = [], np.random.default_rng(1)
  for seed in range(seeds):
    rows += [dict(r, budget="frontier", fd=10.0 + 0.01 * rng.normal()) for r in _es_rows(seed)]
    rows.append(dict(method="wd1", budget="frontier", seed=seed, step=2000, ft_steps=2000,
                     test_nll=1.2 + 0.01 * rng.normal(), mem_ratio=0.4 + 0.01 * rng.normal(),
                     nll_gap=0.0, fd=10.0 + fd_shift + 0.01 * rng.normal()))
  return rows


def test_points_are_judged_against_the_tracker_stop_on_quality_and_memorization():
  rows = _stop_rows(0.0)
  assert frontier.tracker_stop(rows, "memo_ema/index", 0.5)(0)["step"] == 3000
  mean, half, n = frontier.versus_stop(rows, frontier.at_step(rows, "wd1", 2000), "test_nll")
  assert n == 5 and abs(mean + 0.3) < 0.02 and half < 0.03
  assert frontier.stop_verdict(rows, frontier.at_step(rows, "wd1", 2000)) == "beats"
  # worse samples: not a win, whatever the likelihood says
  worse = _stop_rows(5.0)
  assert frontier.stop_verdict(worse, frontier.at_step(worse, "wd1", 2000)) == "does not beat"
  one = _stop_rows(0.0, seeds=1)
  assert frontier.stop_verdict(one, frontier.at_step(one, "wd1", 2000)) == "n/a"
  md = frontier.stop_verdict_table(rows, ["wd1 step 2000", "wd1 step 4000"])
  assert "| wd1 step 2000 | beats |" in md and "| wd1 step 4000 | n/a (no such point) |" in md
  table = frontier.against_stop(rows, frontier.picks(rows))
  assert "| fd - tracker stop |" in table and "tracker_stop (" not in table
  assert table.count("lower (better)") >= 2  # wd1's test_nll and mem_ratio
