"""docs/RESULTS.md's machinery: merged seeds, paired verdicts, the target check, the tracker."""
import os
import re
import subprocess
import sys

import numpy as np

from dit_jax import results, sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rows(ours_shift, seeds=5, seed0=0):
  """Step rows of a fake sweep: control, random, head_grad and ours at one budget, with a
  per-seed offset shared by every method (as a shared base run gives), and base runs."""
  rng = np.random.default_rng(0)
  rows = []
  for seed in range(seed0, seed0 + seeds):
    common = rng.normal(0, 0.05)
    for i, step in enumerate((1000, 2000, 3000, 4000)):
      rows.append(dict(name=f"base-s{seed}", method="base", budget="base", seed=seed, step=step,
                       ft_steps=step - 4000, mem_ratio=0.2 * i + common, fd=50.0,
                       **{"memo_ema/index": 0.3 * i - 0.5}))
    for method, budget, mem in (("original", "none", 0.8), ("random", "h20m50", 0.6),
                                ("head_grad", "h20m50", 0.62),
                                ("ours", "h20m50", 0.6 + ours_shift)):
      for ft in (500, 2000):
        rows.append(dict(name=f"{method}-s{seed}", method=method, budget=budget, seed=seed,
                         step=4000 + ft, ft_steps=ft,
                         mem_ratio=mem + common + rng.normal(0, 0.01),
                         fd=45.0 + 3 * common + rng.normal(0, 0.5)))
  return rows


def test_clear_gain_is_called_lower_and_meets_the_target():
  rows = _rows(-0.1)
  lines = results.verdicts(rows, "ours", (500, 2000), "h20m50")
  assert len(lines) == 2
  for line in lines:
    assert abs(float(re.search(r"mem_ratio vs random (-[0-9.]+)", line).group(1)) + 0.1) < 0.01
  assert all("lower (better), 5 seeds" in l for l in lines)
  assert results.target_line(rows, "ours", "h20m50", (500, 2000)).startswith("**Target met**")
  table = results.table(rows, 2000, ("mem_ratio", "fd"))
  assert "| h20m50 | ours | 5 |" in table and "| none | original | 5 |" in table


def test_no_gain_is_within_noise_and_the_target_says_why():
  rows = _rows(0.0)
  assert all("within noise" in l.split(";")[0] for l in
             results.verdicts(rows, "ours", (500, 2000), "h20m50"))
  line = results.target_line(rows, "ours", "h20m50", (500, 2000))
  assert line.startswith("**Target not met**") and "mem_ratio vs random at +500" in line
  # one seed of a rival cannot support a claim: said, not silently skipped
  one = [r for r in rows if r["method"] != "head_grad" or r["seed"] == 0]
  assert "`head_grad` has 1 seed(s)" in results.target_line(one, "ours", "h20m50", (500,))


def test_merge_keeps_each_point_step_once_and_counts_seeds():
  a, b = _rows(-0.1, seeds=3), _rows(-0.1, seeds=3, seed0=2)  # seed 2 in both
  merged = results.merge([a, b])
  assert len(merged) == len(a) + len(b) - len(a) // 3
  assert "ours@h20m50: 5 seeds (0+1+2+3+4)" in results.counts(merged)


def test_a_rerun_is_compared_with_the_earlier_run_and_never_mixed_into_it():
  now, earlier = _rows(-0.1, seeds=2), _rows(-0.1, seeds=2)
  assert "agrees to every digit" in results.rerun_lines(now, earlier)[0]
  moved = [dict(r, mem_ratio=r["mem_ratio"] + 0.002) for r in earlier]
  assert "largest |difference| mem_ratio 0.002" in results.rerun_lines(now, moved)[0]
  assert results.rerun_lines(now, []) == []
  # the tracker takes a seed's whole base series from one run: seed 0's rerun has a
  # single evaluated step, so its series comes from the earlier run
  short = [r for r in now if not (r["method"] == "base" and r["seed"] == 0 and r["step"] < 4000)]
  rows = results.tracker_rows(short, moved)
  assert sorted(r["step"] for r in rows if r["seed"] == 0) == [1000, 2000, 3000, 4000]
  assert all(r in moved for r in rows if r["seed"] == 0)
  assert all(r in short for r in rows if r["seed"] == 1)


def test_tracker_correlation_and_first_crossing():
  track = results.tracker_vs_memorization(_rows(0.0))
  assert track["key"] == "memo_ema/index" and track["n"] == 20
  assert track["pearson"] > 0.9
  # both rise linearly: each reaches half its rise at the same evaluated step
  assert all(t == m == 3000 for _, t, m in track["crossings"])
  assert "the same evaluated step on 5" in " ".join(results.tracker_lines(track))


def test_results_script_writes_the_document_from_workdirs(tmp_path):
  rows = _rows(-0.1)
  for name, part in (("w1", [r for r in rows if r["seed"] < 3]),
                     ("w2", [r for r in rows if r["seed"] >= 3])):
    os.makedirs(tmp_path / name)
    sweep.write_csv(part, str(tmp_path / name / "sweep_steps.csv"), sweep.STEP_COLUMNS)
  spec = tmp_path / "spec.py"
  spec.write_text(
      "from dit_jax import configlib\n"
      "def get_config(arg=None):\n"
      "  a = configlib.parse_arg(arg, root='', from_csv=False, out='')\n"
      "  c = configlib.ml_collections.ConfigDict()\n"
      "  c.ours, c.budget, c.fts, c.from_csv = 'ours', 'h20m50', (500, 2000), a.from_csv\n"
      "  c.tables = (500, 2000)\n"
      "  c.machine, c.code, c.root, c.out = 'a test', 'this', a.root, a.out\n"
      "  c.studies = {'fake': dict(workdirs=('w1', 'w2'), earlier=('w1',), commands=('cmd',),\n"
      "                            title='Fake')}\n"
      "  c.explore = dict(workdirs=('w1',), earlier=(), commands=('cmd',), title='Ideas')\n"
      "  return c\n")
  out = tmp_path / "docs"
  for arg in (f"root={tmp_path},out={out}", f"from_csv,out={out}"):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "results.py"),
                           "--config", f"{spec}:{arg}"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = (out / "RESULTS.md").read_text()
    assert "**Target met**" in text and "ours@h20m50: 5 seeds" in text
    assert "measured by the earlier run too" in text and "agrees to every digit" in text
    for f in ("fake_steps.csv", "fake_durability.png", "fake_tracker.png", "explore_steps.csv"):
      assert (out / "results" / f).exists(), f


def _grid_rows():
  """A fake capacity grid: excess falls with width until 0.5 and is flat above it;
  memorization appears at n=32 above width 0.25 and nowhere at larger n."""
  rows = []
  for n in (32, 128, 16384):
    for w in (1.0, 0.75, 0.5, 0.25, 0.125):
      excess = 0.02 * (1 + max(0.0, 0.5 - w) * 4)  # 0.02 down to width 0.5, then rising
      mem = 0.6 * w if n == 32 and w > 0.25 else 0.0
      for step in (1000, 3000):  # only the last step counts
        rows.append({"name": f"n{n}-w{w:g}-s0", "method": f"w{w:g}", "budget": f"n{n}",
                     "seed": 0, "step": step, "ft_steps": step, "mem_ratio": mem if step == 3000
                     else 0.0, "nll": 1.4, "fd": 50.0, results.EXCESS: excess,
                     results.HELDOUT: 0.28 + excess, "memo_ema/gt_excess_t0": excess})
  return rows


def test_capacity_grid_finds_w_star_and_the_onset_of_memorization():
  cells = results.grid_cells(_grid_rows())
  assert cells[(32, 1.0)]["mem_ratio"] == 0.6  # the last step, not the first
  assert results.w_star(cells, 0.05) == 0.5  # 0.25 has excess 0.04, twice the full width's
  assert results.w_star(cells, 1.5) == 0.125
  assert results.w_star(cells, 0.08, key=results.HELDOUT) == 0.25  # 0.32 <= 1.08 * 0.30 < 0.33
  assert results.memorization_onset(cells) == {32: 0.5, 128: None, 16384: None}
  assert "| 32 | 0.6 | 0.45 | 0.3 | 0 | 0 |" in results.grid_table(cells, "mem_ratio")
  points = [{"method": "original", "seed": 0, "heads": "4+4", "mlp": "512+512"},
            {"method": "capacity", "seed": 0, "heads": "2+2", "mlp": "64+64"}]
  (found,) = results.search_lines(points, [1.0, 0.75, 0.5, 0.25, 0.125], 0.5)
  assert (found["kept_heads"], found["kept_mlp"]) == (0.5, 0.125)
  assert (found["steps_heads"], found["steps_mlp"]) == (0, 2)
