"""The command-line entry points, as a user runs them."""
import json
import os
import subprocess
import sys

import pytest

from dit_jax import writers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def script(name, *args):
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=os.path.join(ROOT, ".jax_cache"))
  return subprocess.run([sys.executable, os.path.join(ROOT, "scripts", name), *args],
                        capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)


def train(workdir, data_dir, *extra):
  proc = script("train.py", "--config", "configs/default.py:runlocal", "--workdir", workdir,
                f"--config.data.data_dir={data_dir}", *extra)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


@pytest.mark.loop
def test_train_twice_resumes_and_matches_a_straight_run(tmp_path, data_dir):
  w, straight = str(tmp_path / "w"), str(tmp_path / "straight")
  train(w, data_dir, "--config.train.steps=20")
  second = train(w, data_dir, "--config.train.steps=40")
  assert "resumed from step 20" in second.stderr
  train(straight, data_dir, "--config.train.steps=40")
  last = lambda d: writers.read_metrics(d)[-1]
  assert last(w)["step"] == last(straight)["step"] == 40
  assert last(w)["train/loss"] == last(straight)["train/loss"]

  proc = script("sample.py", "--workdir", w, "--num", "4")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert os.path.exists(os.path.join(w, "samples.png"))


def test_bad_flag_value_is_one_line_not_a_traceback(tmp_path, data_dir):
  proc = script("train.py", "--config", "configs/default.py:runlocal",
                "--workdir", str(tmp_path / "w"), f"--config.data.data_dir={data_dir}",
                "--config.train.steps=0")
  assert proc.returncode != 0
  assert "error: config.train.steps must be a positive integer" in proc.stderr
  assert "Traceback" not in proc.stderr


@pytest.mark.loop
def test_evaluate_writes_eval_json_and_report(tmp_path, data_dir):
  w = str(tmp_path / "w")
  train(w, data_dir)
  proc = script("evaluate.py", "--workdir", w, "--num", "24")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "mem_ratio" in proc.stdout
  ev = json.load(open(os.path.join(w, "eval.json")))
  for key in ("mem_ratio", "precision", "recall", "fd", "num_params", "flops_per_image",
              "d_ratio_p50", "step"):
    assert key in ev, key
  assert 0.0 <= ev["mem_ratio"] <= 1.0 and ev["step"] == 20
  assert ev["fd_space"].startswith("classifier")
  for png in ("gap_curves", "gap_vs_t", "d_ratio_hist", "nearest_train", "samples"):
    assert os.path.exists(os.path.join(w, "report", f"{png}.png")), png


def test_figure1_script(tmp_path):
  out = str(tmp_path / "fig.png")
  proc = script("figure1.py", "--n", "16,64", "--queries", "32", "--d", "16", "--out", out)
  assert proc.returncode == 0, proc.stderr[-3000:]
  res = json.load(open(str(tmp_path / "fig.json")))
  small, large = res["curves"]["16"]["loss_gap"], res["curves"]["64"]["loss_gap"]
  assert small[0] > 100 * small[-1]  # grows as t -> 0, like d / s_t^2
  assert small[-1] > large[-1]  # and shrinks as n grows (where n matters: larger t)
