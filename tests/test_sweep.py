"""Sweeps from a config file: one base run per seed, resumable points, sweep.csv."""
import csv
import os

from dit_jax import sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP = os.path.join(ROOT, "configs", "sweeps", "prune_ratio.py")


def test_sweep_runs_points_once_and_writes_csv(tmp_path, data_dir):
  w = str(tmp_path / "sweep")
  spec = f"{SWEEP}:runlocal,methods=original+head_grad"
  rows, summary = sweep.run_sweep(spec, w, {"data.data_dir": data_dir})
  assert [r["method"] for r in rows] == ["original", "head_grad"]
  assert sorted(os.listdir(w)) == sorted(["base-s0", "original-s0", "head_grad-s0",
                                          "sweep.csv", "sweep_summary.md", "sweep.png"])
  with open(os.path.join(w, "sweep.csv")) as f:
    table = list(csv.DictReader(f))
  assert len(table) == 2 and all(0 <= float(r["mem_ratio"]) <= 1 for r in table)
  orig, pruned = table[0], table[1]
  assert int(pruned["num_params"]) < int(orig["num_params"])
  assert float(pruned["ratio"]) == 0.2
  assert "| head_grad | 1 |" in summary

  # a second call reads the finished points instead of training them again
  stamp = os.path.getmtime(os.path.join(w, "head_grad-s0", "eval.json"))
  again, _ = sweep.run_sweep(spec, w, {"data.data_dir": data_dir})
  assert os.path.getmtime(os.path.join(w, "head_grad-s0", "eval.json")) == stamp
  assert [r["mem_ratio"] for r in again] == [r["mem_ratio"] for r in rows]
