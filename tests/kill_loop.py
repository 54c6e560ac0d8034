"""Kill -9 a training run at random moments, restart it, repeat; nothing may be lost.

  python tests/kill_loop.py --trials 20            # the long version (a few minutes)

Each restart must resume from the newest complete checkpoint on disk, and the run
that finally finishes must end with the parameters of a run that never stopped.
Prints the tally as JSON; tests/test_reliability.py runs a short version.
"""
import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from dit_jax import checkpointing  # pylint: disable=wrong-import-position
from dit_jax import writers  # pylint: disable=wrong-import-position

TMP_SUFFIX = ".orbax-checkpoint-tmp"
STARTED = r"(?:resumed from|starting from) step (\d+)"  # once the state is ready


def train_command(workdir, data_dir, steps, every):
  return [sys.executable, os.path.join(ROOT, "scripts", "train.py"),
          "--config", "configs/default.py:runlocal", "--workdir", workdir,
          f"--config.data.data_dir={data_dir}", f"--config.train.steps={steps}",
          f"--config.checkpoint.every={every}", "--config.memo.every=0"]


def start(cmd, log_path):
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=os.path.join(ROOT, ".jax_cache"))
  with open(log_path, "w", encoding="utf-8") as log:
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, cwd=ROOT, env=env)


def read(path):
  with open(path, encoding="utf-8", errors="replace") as f:
    return f.read()


def wait_for(proc, log_path, pattern, timeout=300):
  """Polls the log until pattern shows (True) or the process ends (False)."""
  end = time.monotonic() + timeout
  while time.monotonic() < end:
    if re.search(pattern, read(log_path)):
      return True
    if proc.poll() is not None:
      return False
    time.sleep(0.05)
  raise TimeoutError(f"{pattern!r} not in {log_path} after {timeout}s:\n{read(log_path)[-3000:]}")


def newest_complete(ckpt_dir):
  """The newest step directory holding orbax's commit marker, as the resume must pick."""
  if not os.path.isdir(ckpt_dir):
    return None
  steps = [int(n) for n in os.listdir(ckpt_dir) if n.isdigit() and
           os.path.exists(os.path.join(ckpt_dir, n, "commit_success.txt"))]
  return max(steps, default=None)


def unfinished_saves(ckpt_dir):
  return sorted(n for n in os.listdir(ckpt_dir) if TMP_SUFFIX in n) if os.path.isdir(
      ckpt_dir) else []


def final_state(workdir):
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
  state, meta = ckpt.restore(None, ckpt.latest_step())  # checksums verified
  ckpt.close()
  return state, meta


def states_equal(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  return len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb))


def one_attempt(cmd, log_path, rng, train_secs, kill):
  """Runs once; with kill, SIGKILLs it at a random moment.

  -> (returncode, killed, seconds from the start-up log line to the exit).
  """
  proc = start(cmd, log_path)
  if kill and rng.random() < 0.2:  # sometimes during start-up or restore
    time.sleep(rng.uniform(0.2, 3.0))
  elif wait_for(proc, log_path, STARTED) and kill:
    time.sleep(rng.uniform(0.0, train_secs))
  t0 = time.monotonic()
  if kill and proc.poll() is None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return proc.returncode, True, None
  proc.wait(timeout=600)
  return proc.returncode, False, time.monotonic() - t0


def kill_loop(trials, data_dir, base, seed=0, steps=40, every=2, reference=None,
              train_secs=3.0, say=print):
  """Kills trials times, over as many runs as it takes; -> the tally (dict).

  reference: the final state of an uninterrupted run (else one is trained first);
  train_secs: how long the steps take after start-up; kills spread over it.
  """
  rng = random.Random(seed)
  tally = dict(trials=trials, kills=0, kills_mid_save=0, kills_before_resume=0, runs=0,
               runs_equal=0, resumes_checked=0, wrong_resumes=[], damaged_warnings=0)
  if reference is None:
    ref_dir, ref_log = os.path.join(base, "reference"), os.path.join(base, "reference.log")
    rc, _, train_secs = one_attempt(train_command(ref_dir, data_dir, steps, every), ref_log,
                                    rng, 0, kill=False)
    assert rc == 0, read(ref_log)[-3000:]
    reference = final_state(ref_dir)[0]
  while tally["kills"] < trials:
    tally["runs"] += 1
    workdir = os.path.join(base, f"run{tally['runs']}")
    ckpt_dir = os.path.join(workdir, "checkpoints")
    cmd = train_command(workdir, data_dir, steps, every)
    for attempt in range(1, 1000):
      expected = newest_complete(ckpt_dir) or 0
      log_path = os.path.join(base, f"run{tally['runs']}.{attempt}.log")
      rc, killed, _ = one_attempt(cmd, log_path, rng, train_secs, tally["kills"] < trials)
      text = read(log_path)
      started = re.findall(STARTED, text)
      if started:  # every restart must pick the newest complete checkpoint
        tally["resumes_checked"] += 1
        if int(started[-1]) != expected:
          tally["wrong_resumes"].append(dict(log=log_path, expected=expected, got=started[-1]))
      tally["damaged_warnings"] += text.count("skipping damaged checkpoint")
      if not killed:
        assert rc == 0, f"run failed (exit {rc}):\n{text[-3000:]}"
        break
      tally["kills"] += 1
      tally["kills_before_resume"] += not started
      # a run that started has cleared older unfinished saves: any left is this one's
      mid_save = unfinished_saves(ckpt_dir) if started else []
      tally["kills_mid_save"] += bool(mid_save)
      say(f"kill {tally['kills']}/{trials}: newest complete step {newest_complete(ckpt_dir)}"
          + (f", unfinished save {mid_save}" if mid_save else "")
          + ("" if started else ", before the run had started"))
    state, meta = final_state(workdir)
    writers.read_metrics(workdir)  # the metrics file still parses
    equal = meta["step"] == steps and states_equal(state, reference)
    tally["runs_equal"] += equal
    say(f"run {tally['runs']} finished after {attempt} attempts; parameters equal to the "
        f"uninterrupted run's: {equal}")
  return tally


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--trials", type=int, default=20, help="how many kill -9s")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--steps", type=int, default=40)
  parser.add_argument("--every", type=int, default=2, help="checkpoint.every")
  parser.add_argument("--workdir", default=None, help="default: a temporary directory")
  args = parser.parse_args()
  base = args.workdir or tempfile.mkdtemp(prefix="kill_loop.")
  data_dir = os.path.join(base, "tfds")
  t0 = time.monotonic()
  tally = kill_loop(args.trials, data_dir, base, args.seed, args.steps, args.every)
  tally["seconds"] = round(time.monotonic() - t0)
  print(json.dumps(tally, indent=1))
  ok = not tally["wrong_resumes"] and tally["runs_equal"] == tally["runs"]
  sys.exit(0 if ok else 1)


if __name__ == "__main__":
  main()
