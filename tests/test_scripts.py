"""The command-line entry points, as a user runs them."""
import os
import subprocess
import sys

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
