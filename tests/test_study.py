"""The study wing (docs/RESULTS.md): merged seeds, paired verdicts, the target, tracker, capacity."""
import os
import re
import subprocess
import sys

import numpy as np

from dit_jax.study import capacity, compare, stats, sweepdir, tracker

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
  lines = compare.verdicts(rows, "ours", (500, 2000), "h20m50")
  assert len(lines) == 2
  for line in lines:
    assert abs(float(re.search(r"mem_ratio vs random (-[0-9.]+)", line).group(1)) + 0.1) < 0.01
  assert all("lower (better), 5 seeds" in l for l in lines)
  assert compare.target_line(rows, "ours", "h20m50", (500, 2000)).startswith("**Target met**")
  table = compare.table(rows, 2000, ("mem_ratio", "fd"))
  assert "| h20m50 | ours | 5 |" in table and "| none | original | 5 |" in table


def test_no_gain_is_within_noise_and_the_target_says_why():
  rows = _rows(0.0)
  assert all("within noise" in l.split(";")[0] for l in
             compare.verdicts(rows, "ours", (500, 2000), "h20m50"))
  line = compare.target_line(rows, "ours", "h20m50", (500, 2000))
  assert line.startswith("**Target not met**") and "mem_ratio vs random at +500" in line
  # one seed of a rival cannot support a claim: said, not silently skipped
  one = [r for r in rows if r["method"] != "head_grad" or r["seed"] == 0]
  assert "`head_grad` has 1 seed(s)" in compare.target_line(one, "ours", "h20m50", (500,))


def test_merge_keeps_each_point_step_once_and_counts_seeds():
  a, b = _rows(-0.1, seeds=3), _rows(-0.1, seeds=3, seed0=2)  # seed 2 in both
  merged = sweepdir.merge([a, b])
  assert len(merged) == len(a) + len(b) - len(a) // 3
  assert "ours@h20m50: 5 seeds (0+1+2+3+4)" in compare.counts(merged)


def test_a_rerun_is_compared_with_the_earlier_run_and_never_mixed_into_it():
  now, earlier = _rows(-0.1, seeds=2), _rows(-0.1, seeds=2)
  assert "agrees to every digit" in compare.rerun_lines(now, earlier)[0]
  moved = [dict(r, mem_ratio=r["mem_ratio"] + 0.002) for r in earlier]
  assert "largest |difference| mem_ratio 0.002" in compare.rerun_lines(now, moved)[0]
  assert compare.rerun_lines(now, []) == []
  # the tracker takes a seed's whole base series from one run: seed 0's rerun has a
  # single evaluated step, so its series comes from the earlier run
  short = [r for r in now if not (r["method"] == "base" and r["seed"] == 0 and r["step"] < 4000)]
  rows, old = tracker.base_rows(short, moved)
  assert old == [0]
  assert sorted(r["step"] for r in rows if r["seed"] == 0) == [1000, 2000, 3000, 4000]
  assert all(r in moved for r in rows if r["seed"] == 0)
  assert all(r in short for r in rows if r["seed"] == 1)


def test_tracker_correlation_and_first_crossing():
  track = tracker.against_memorization(_rows(0.0))
  assert track["key"] == "memo_ema/index" and track["n"] == 20
  assert track["pearson"] > 0.9
  # both rise linearly: each reaches half its rise at the same evaluated step
  assert all(t == m == 3000 for _, t, m in track["crossings"])
  assert "the same evaluated step on 5" in " ".join(tracker.lines(track))


def _write(tmp_path, name, rows, columns=sweepdir.STEP_COLUMNS, file="sweep_steps.csv"):
  os.makedirs(tmp_path / name, exist_ok=True)
  sweepdir.write_csv(rows, str(tmp_path / name / file), columns)


def write_spec(tmp_path, spec_lines):
  """A study spec, tmp_path/spec.py; spec_lines: get_config's body after `c` and `a`."""
  spec = tmp_path / "spec.py"
  spec.write_text(
      "from dit_jax import configlib\n"
      "def get_config(arg=None):\n"
      "  a = configlib.parse_arg(arg, root='', from_csv=False, out='')\n"
      "  c = configlib.ml_collections.ConfigDict()\n"
      "  c.from_csv, c.machine, c.code = a.from_csv, 'a test', 'this'\n"
      "  c.root, c.out = a.root, a.out\n"
      + "".join(f"  {line}\n" for line in spec_lines) + "  return c\n")
  return spec


def _results_documents(tmp_path, spec_lines):
  """RESULTS.md as scripts/results.py writes it from the workdirs under tmp_path, then
  as it rebuilds it from the csv copies; spec_lines: get_config's body after `c` and `a`."""
  spec = write_spec(tmp_path, spec_lines)
  out = tmp_path / "docs"
  for arg in (f"root={tmp_path},out={out}", f"from_csv,out={out}"):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "results.py"),
                           "--config", f"{spec}:{arg}"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    yield (out / "RESULTS.md").read_text(), out / "results"


def test_results_script_writes_the_document_from_workdirs(tmp_path):
  rows = _rows(-0.1)
  _write(tmp_path, "w1", [r for r in rows if r["seed"] < 3])
  _write(tmp_path, "w2", [r for r in rows if r["seed"] >= 3])
  for text, res in _results_documents(tmp_path, (
      "c.ours, c.budget, c.fts, c.tables = 'ours', 'h20m50', (500, 2000), (500, 2000)",
      "c.studies = {'fake': dict(workdirs=('w1', 'w2'), earlier=('w1',), commands=('cmd',), "
      "title='Fake')}",
      "c.explore = dict(workdirs=('w1',), earlier=(), commands=('cmd',), title='Ideas')")):
    assert "**Target met**" in text and "ours@h20m50: 5 seeds" in text
    assert "measured by the earlier run too" in text and "agrees to every digit" in text
    for f in ("fake_steps.csv", "fake_durability.png", "fake_tracker.png", "explore_steps.csv"):
      assert (res / f).exists(), f


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
                     else 0.0, "nll": 1.4, "fd": 50.0, capacity.EXCESS: excess,
                     capacity.HELDOUT: 0.28 + excess, "memo_ema/gt_excess_t0": excess})
  return rows


def test_capacity_grid_finds_w_star_and_the_onset_of_memorization():
  cells = capacity.grid_cells(_grid_rows())
  assert cells[(32, 1.0)]["mem_ratio"] == 0.6  # the last step, not the first
  assert capacity.w_star(cells, 0.05) == 0.5  # 0.25 has excess 0.04, twice the full width's
  assert capacity.w_star(cells, 1.5) == 0.125
  assert capacity.w_star(cells, 0.08, key=capacity.HELDOUT) == 0.25  # 0.32 <= 1.08 * 0.30 < 0.33
  assert capacity.memorization_onset(cells) == {32: 0.5, 128: None, 16384: None}
  assert "| 32 | 0.6 | 0.45 | 0.3 | 0 | 0 |" in capacity.grid_table(cells, "mem_ratio")
  points = [{"method": "original", "seed": 0, "heads": "4+4", "mlp": "512+512"},
            {"method": "capacity", "seed": 0, "heads": "2+2", "mlp": "64+64"}]
  (found,) = capacity.search_lines(points, [1.0, 0.75, 0.5, 0.25, 0.125], 0.5)
  assert (found["kept_heads"], found["kept_mlp"]) == (0.5, 0.125)
  assert (found["steps_heads"], found["steps_mlp"]) == (0, 2)


def _search_rows(seeds=3):
  """Fake capacity-search sweeps: the control, the chosen width and random at it (budget
  cap), step rows and sweep.csv points; capacity memorizes 0.3 less than the control."""
  rng = np.random.default_rng(1)
  steps, points = [], []
  for seed in range(seeds):
    common = rng.normal(0, 0.05)
    for method, budget, mem, heads, mlp in (("original", "none", 0.7, "4+4", "512+512"),
                                            ("capacity", "cap", 0.4, "2+2", "256+256"),
                                            ("random", "cap", 0.41, "2+2", "256+256")):
      row = dict(name=f"{method}-s{seed}", method=method, budget=budget, seed=seed, step=8500,
                 ft_steps=500, mem_ratio=mem + common + rng.normal(0, 0.005),
                 fd=50.0 + rng.normal(0, 0.5), precision=0.8 + rng.normal(0, 0.01))
      steps.append(row)
      points.append(dict(row, heads=heads, mlp=mlp))
  return steps, points


def test_capacity_section_without_a_known_density(tmp_path):
  """The digits form: the proxy oracle is the held-out loss at the largest n, the plot
  has no per-bucket excess, and quality is judged by fd."""
  grid = [{k: v for k, v in r.items() if "excess" not in k} for r in _grid_rows()]
  _write(tmp_path, "g", grid)
  _write(tmp_path, "g", [r for r in grid if r["step"] == 3000], sweepdir.COLUMNS, "sweep.csv")
  _write(tmp_path, "g0", [dict(r, **{capacity.HELDOUT: 0.3}) for r in grid])  # flat: W = 1/8
  steps, points = _search_rows()
  _write(tmp_path, "s", steps)
  _write(tmp_path, "s", points, sweepdir.COLUMNS, "sweep.csv")
  for text, res in _results_documents(tmp_path, (
      "c.ours, c.budget, c.fts, c.tables = 'ours', 'cap', (500,), ()",
      "c.studies = {}",
      "c.explore = dict(workdirs=('s',), earlier=(), commands=('cmd',), title='Ideas')",
      "c.capacity = {'cap_digits': dict(grid=('g',), search=('s',), fts=(500,), data='digits', "
      "oracle='heldout', commands=('cmd',), title='Digits capacity', notes='fake', "
      "earlier=('g0',), earlier_title='Shorter')}",
      "c.capacity_tols, c.capacity_tol = (0.05, 0.08), 0.08")):
    # held-out loss 0.28 + excess: within 8% of the full width's 0.30 down to 0.25
    assert "W(0.05) = 0.5, W(0.08) = 0.25" in text
    assert "### The capacity search against W(0.08) = 0.25" in text
    assert "| 0 | 2+2 | 256+256 | 0.500 | 0.500 | 0 / 0 | 1 / 1 |" in text  # W(0.05), W(0.08)
    assert "mem_ratio vs the control: -0.3" in text and "3 of 3 seeds within one grid step" in text
    assert "fd vs random at the same width" in text and "**Target met**." in text
    assert "excess over the true score" not in text  # no density, no excess table
    assert "Seeds per cell, by n: n=32: 1, n=128: 1, n=16384: 1." in text
    assert "### Shorter" in text and "the same way: W(0.05) = 0.125, W(0.08) = 0.125." in text
    assert (res / "cap_digits_grid.png").exists() and (res / "cap_digits_grid_earlier.csv").exists()
    assert len(sweepdir.read_csv(str(res / "cap_digits_grid_points.csv"))) == 15


def test_figure_labels_and_a_bounded_interval_for_ratios():
  assert compare.budget_label("h20m50") == "20% of heads + 50% of MLP units removed"
  assert compare.budget_label("h20") == "20% of heads removed"
  assert compare.method_label("original").startswith("control")
  # five seeds near 0: a t-interval reaches below 0, the bootstrap stays in the values' range
  vals = [0.0, 0.0, 0.0, 0.0, 0.1]
  mean, half, _ = stats.t_interval(vals)
  assert mean - half < 0
  mean, low, high, n = stats.bootstrap_interval(vals)
  assert n == 5 and 0.0 <= low <= mean <= high <= 0.1
  assert stats.bootstrap_interval([0.4]) == (0.4, 0.4, 0.4, 1)


def test_widths_above_the_full_model_bracket_w_star_or_say_they_do_not():
  from dit_jax.study import document
  key = capacity.EXCESS
  flat = {(100, w): {key: v} for w, v in ((2, 1.0), (1.5, 1.01), (1, 1.02), (0.5, 2.0))}
  stars = {0.05: capacity.w_star(flat, 0.05, key=key)}
  assert stars == {0.05: 1}  # against the widest (2), not the full width
  line = " ".join(document._above_full(flat, 100, key, stars))
  assert "1: 1.02, 1.5: 1.01, 2: 1" in line and "brackets W from above" in line
  falling = {**flat, (100, 2): {key: 0.5}}
  stars = {0.05: capacity.w_star(falling, 0.05, key=key)}
  assert stars == {0.05: 2}
  assert "not bracketed" in " ".join(document._above_full(falling, 100, key, stars))
  assert document._above_full({(100, 1): {key: 1.0}, (100, 0.5): {key: 2.0}}, 100, key,
                              {0.05: 1}) == []  # no wider cells: nothing to say


def test_capacity_at_one_n_is_judged_against_each_seeds_own_best_width(tmp_path):
  """Seed 1's grid is lowest at 0.25, the others' at 0.5; the search keeps half of the
  units everywhere: within one grid step of every target, and its excess at +2000 is
  below the control's."""
  grid = []
  for seed in range(3):
    best = 0.25 if seed == 1 else 0.5
    for w in (1.0, 0.75, 0.5, 0.25, 0.125):
      grid.append({"name": f"n512-w{w:g}-s{seed}", "method": f"w{w:g}", "budget": "n512",
                   "seed": seed, "step": 6000, "ft_steps": 6000, "mem_ratio": 0.0,
                   capacity.EXCESS: 0.01 * (1 + abs(w - best))})
  assert capacity.best_width_per_seed(grid, 512) == {0: 0.5, 1: 0.25, 2: 0.5}
  _write(tmp_path, "g", grid)
  _write(tmp_path, "g", grid, sweepdir.COLUMNS, "sweep.csv")
  steps, points = _search_rows()
  steps = [dict(r, ft_steps=2000, **{capacity.EXCESS: 0.012 if r["method"] == "original"
                                     else 0.0101 + 0.0001 * r["seed"]}) for r in steps]
  _write(tmp_path, "s", steps)
  _write(tmp_path, "s", [dict(p, ft_steps=2000) for p in points], sweepdir.COLUMNS, "sweep.csv")
  for text, _ in _results_documents(tmp_path, (
      "c.ours, c.budget, c.fts, c.tables, c.studies = 'ours', 'cap', (500,), (), {}",
      "c.explore = dict(workdirs=(), earlier=(), commands=(), title='Ideas')",
      "c.capacity_at_n = {'cap512': dict(grid=('g',), search=('s',), n=512, fts=(2000,), "
      "commands=('cmd',), title='At n=512', notes='fake')}")):
    section = text[text.index("## At n=512"):]
    assert "seed 0: 0.5, seed 1: 0.25, seed 2: 0.5" in section
    assert "| 1 | 0.25 | 2+2 | 256+256 | 0.500 | 0.500 | 1 / 1 |" in section
    assert "3 of 3 seeds within one grid step of their target" in section
    assert "chosen model minus the control: -0.0018" in section and "**Target met**." in section
