"""Sweeps from a config file: equal budgets, shared base runs, resumable points, intervals."""
import json
import os

import numpy as np
import pytest

from dit_jax import writers
from dit_jax.study import compare, stats, sweep, sweepdir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP = os.path.join(ROOT, "configs", "sweeps", "prune_ratio.py")


@pytest.mark.loop
def test_sweep_compares_methods_at_equal_budget_and_resumes(tmp_path, data_dir):
  w = str(tmp_path / "sweep")
  spec = f"{SWEEP}:runlocal,budgets=h20m50,methods=random+head_grad+contrast"
  rows, step_rows, summary = sweep.run_sweep(spec, w, {"data.data_dir": data_dir})
  assert [(r["method"], r["budget"]) for r in rows] == [
      ("base", "base"), ("original", "none"), ("random", "h20m50"), ("head_grad", "h20m50"),
      ("contrast", "h20m50"), ("scratch", "h20m50")]
  table = sweepdir.read_csv(os.path.join(w, "sweep.csv"))
  assert [r["name"] for r in table] == [r["name"] for r in rows]
  at_budget = [r for r in table if r["budget"] == "h20m50"]
  # the same number of units removed by every method: identical sizes and FLOPs
  assert len({r["num_params"] for r in at_budget}) == 1
  assert len({r["flops_per_image"] for r in at_budget}) == 1
  assert at_budget[0]["num_params"] < table[1]["num_params"]
  # the from-scratch row trains contrast's pruned shape from step 0
  contrast, scratch = at_budget[2], at_budget[3]
  assert scratch["heads"] == contrast["heads"] and scratch["mlp"] == contrast["mlp"]
  assert writers.read_metrics(os.path.join(w, "scratch@h20m50-s0"))[0]["step"] == 5  # from 0
  # durability: every point evaluated after 5 and 10 fine-tuning steps
  steps = sweepdir.read_csv(os.path.join(w, "sweep_steps.csv"))
  assert {r["ft_steps"] for r in steps if r["method"] != "base"} == {5, 10}
  assert all(0 <= r["mem_ratio"] <= 1 for r in steps)
  for point in rows:
    ev = json.load(open(os.path.join(w, point["name"], "eval.json")))
    assert {k: v["size"] for k, v in ev["splits"].items()} == {"train": 32, "select": 32,
                                                               "test": 32}
  assert "### 10 fine-tuning steps" in summary and "| h20m50 | contrast | 1 |" in summary

  # a second call reads the finished points instead of training them again
  stamp = os.path.getmtime(os.path.join(w, "contrast@h20m50-s0", "eval.json"))
  again, _, _ = sweep.run_sweep(spec, w, {"data.data_dir": data_dir})
  assert os.path.getmtime(os.path.join(w, "contrast@h20m50-s0", "eval.json")) == stamp
  assert [r["mem_ratio"] for r in again] == [r["mem_ratio"] for r in rows]
  # a later command that lists fewer points keeps the others' rows in the csv files
  fewer, _, _ = sweep.run_sweep(f"{SWEEP}:runlocal,budgets=h20m50,methods=random,scratch=", w,
                                {"data.data_dir": data_dir})
  assert sorted(r["name"] for r in fewer) == sorted(r["name"] for r in rows)
  assert sorted(r["name"] for r in sweepdir.read_csv(os.path.join(w, "sweep.csv"))) == sorted(
      r["name"] for r in rows)
  assert len(sweepdir.read_csv(os.path.join(w, "sweep_steps.csv"))) == len(steps)


def test_paired_intervals_and_verdicts():
  # per seed, a is lower than b by 0.1 +- 0.01: the paired interval excludes zero even
  # though the seeds spread far more than the difference
  base = {0: 0.2, 1: 0.5, 2: 0.8, 3: 0.35, 4: 0.6}
  noise = [0.01, -0.005, 0.0, 0.008, -0.012]
  a = {s: v - 0.1 + e for (s, v), e in zip(base.items(), noise)}
  mean, half, n = stats.paired(a, base)
  assert n == 5 and mean == pytest.approx(-0.1 + np.mean(noise))
  assert half == pytest.approx(2.776 * np.std(noise, ddof=1) / np.sqrt(5), rel=1e-3)
  assert stats.verdict(mean, half) == "lower (better)"
  assert stats.verdict(mean, half, lower_is_better=False) == "lower (worse)"
  unpaired_mean, unpaired_half, _ = stats.t_interval(a.values())
  assert unpaired_half > 0.1  # the spread of seeds alone would hide it
  assert stats.verdict(0.02, 0.05) == "within noise"
  assert stats.paired({0: 1.0, 1: 2.0}, {1: 1.5, 2: 0.0})[2] == 1  # only shared seeds


def test_comparisons_pair_by_seed_within_a_budget():
  rows = []
  for seed in range(3):
    for method, budget, mem in (("original", "none", 0.5), ("random", "b", 0.3),
                                ("contrast", "b", 0.2), ("random", "c", 0.1)):
      rows.append(dict(method=method, budget=budget, seed=seed, ft_steps=500,
                       mem_ratio=mem + 0.01 * seed, fd=10.0))
  recs = {(r["budget"], r["method"]): r for r in compare.comparisons(rows, 500)}
  assert recs[("b", "contrast")]["mem_ratio-random"][0] == pytest.approx(-0.1)
  assert recs[("b", "contrast")]["mem_ratio-control"][0] == pytest.approx(-0.3)
  assert "mem_ratio-random" not in recs[("b", "random")]
  assert recs[("c", "random")]["mem_ratio-control"][0] == pytest.approx(-0.4)


@pytest.mark.loop
def test_capacity_grid_runlocal_trains_each_width_and_n_and_records_the_excess(tmp_path, data_dir):
  w = str(tmp_path / "grid")
  spec = os.path.join(ROOT, "configs", "sweeps", "capacity_grid.py") + ":runlocal"
  rows, _, _ = sweep.run_sweep(spec, w, {"data.data_dir": data_dir})
  assert [(r["budget"], r["method"]) for r in rows] == [
      ("n32", "w1"), ("n32", "w0.75"), ("n64", "w1"), ("n64", "w0.75")]
  assert rows[1]["num_params"] < rows[0]["num_params"]  # narrower: fewer heads and MLP units
  steps = sweepdir.read_csv(os.path.join(w, "sweep_steps.csv"))
  last = [r for r in steps if r["step"] == max(s["step"] for s in steps)]
  # the density is known: every cell has its held-out excess over the true score's loss
  assert len(last) == 4 and all(r["memo_ema/gt_excess"] is not None for r in last)
  assert all(r["memo_ema/gt_excess_t0"] is not None for r in last)


@pytest.mark.loop
def test_points_that_differ_only_in_seed_train_together(tmp_path, data_dir, monkeypatch):
  w = str(tmp_path / "grid")
  spec = os.path.join(ROOT, "configs", "sweeps", "capacity_grid.py") + ":runlocal,seeds=2,widths=1"
  groups = []
  real = sweep.seeds.train_group
  def recording(configs, workdirs):
    groups.append([os.path.basename(d) for d in workdirs])
    return real(configs, workdirs)
  monkeypatch.setattr(sweep.seeds, "train_group", recording)
  rows, steps, _ = sweep.run_sweep(spec, w, {"data.data_dir": data_dir}, seed_parallel="on")
  # each n's two seeds in one program; the n differ in their training sets' size
  assert groups == [[f"n{n}-w1-s0", f"n{n}-w1-s1"] for n in (32, 64)]
  assert sorted((r["budget"], r["seed"]) for r in rows) == [
      ("n32", 0), ("n32", 1), ("n64", 0), ("n64", 1)]
  assert all(r["memo_ema/gt_excess"] is not None for r in steps)
  again, _, _ = sweep.run_sweep(spec, w, {"data.data_dir": data_dir}, seed_parallel="on")
  assert len(groups) == 2 and len(again) == 4  # finished points are read, not rerun
  with pytest.raises(sweep.ConfigError, match="seed_parallel"):
    sweep.run_sweep(spec, w, {"data.data_dir": data_dir}, seed_parallel="yes")


def test_sweep_status_reads_progress_without_running_anything(tmp_path):
  spec = os.path.join(ROOT, "configs", "sweeps", "frontier.py") + ":runlocal,methods=random"
  w = tmp_path / "sweep"
  names = [p["name"] for p in sweep.status(spec, str(w))]
  assert names == ["early_stop-s0", "random@h20m50-s0", "wd1-s0", "w0.5-s0"]
  assert {p["state"] for p in sweep.status(spec, str(w))} == {"waiting"}
  os.makedirs(w / "early_stop-s0" / "checkpoints" / "10")
  os.makedirs(w / "random@h20m50-s0" / "checkpoints" / "10")
  (w / "early_stop-s0" / "eval.json").write_text(json.dumps({"step": 20}))  # its last step
  (w / "random@h20m50-s0" / "eval.json").write_text(json.dumps({"step": 15}))  # not its end
  got = {p["name"]: (p["state"], p["step"], p["steps"]) for p in sweep.status(spec, str(w))}
  assert got["early_stop-s0"][0] == "done"
  assert got["random@h20m50-s0"] == ("started", 10, 20)
  assert got["wd1-s0"] == ("waiting", 0, 20)
  assert not os.path.exists(w / "sweep.csv")  # nothing written
  import subprocess
  import sys
  out = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "sweep.py"),
                        "--config", spec, "--workdir", str(w), "--status"],
                       capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "started  random@h20m50-s0 step 10 of 20" in out.stdout
  assert out.stdout.strip().endswith("1 of 4 points done")
  # a point that needs an earlier point's result (random at the capacity search's cut)
  # waits, with no step count, until that point has run
  cap = os.path.join(ROOT, "configs", "sweeps", "prune_ratio.py") + ":runlocal,budgets=cap"
  got = {p["name"]: p for p in sweep.status(cap, str(tmp_path / "cap"))}
  assert got["random@cap-s0"]["state"] == "waiting" and got["random@cap-s0"]["steps"] is None
