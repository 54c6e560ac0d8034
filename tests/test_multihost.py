"""Two real processes on loopback (jax.distributed, CPU collectives over gloo), each
with 2 fake devices, train as one 4-device run: stopped by a SIGTERM to one of
them, resumed, they end where one process with 4 devices does."""
import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from dit_jax import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 60


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _train(workdir, data_dir, devices, process=None):
  """scripts/train.py on the runlocal config; process = (port, id) joins a 2-process run."""
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             JAX_COMPILATION_CACHE_DIR=os.path.join(ROOT, ".jax_cache"))
  cmd = [sys.executable, os.path.join(ROOT, "scripts", "train.py"),
         "--config", "configs/default.py:runlocal", "--workdir", workdir,
         f"--config.data.data_dir={data_dir}", f"--config.train.steps={STEPS}",
         "--config.checkpoint.every=20", "--config.log_every=5"]
  if process:
    port, pid = process
    cmd += [f"--coordinator=127.0.0.1:{port}", "--num_processes=2", f"--process_id={pid}"]
  return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _pair(workdir, data_dir):
  port = _free_port()
  return [_train(workdir, data_dir, 2, (port, pid)) for pid in (0, 1)]


def _finish(procs, timeout=600, status=0):
  outs = [p.communicate(timeout=timeout) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == status, err[-3000:]
  return outs


def _rows(workdir):
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def _logged_steps(workdir):
  """The steps of metrics.jsonl's train/loss rows, in file order (one per logged step
  and writer)."""
  return [r["step"] for r in _rows(workdir) if "train/loss" in r]


def _params(workdir):
  from dit_jax import workdir as workdir_lib
  _, _, state, meta = workdir_lib.load(workdir)
  return meta["step"], jax.tree.map(np.asarray, state["params"])


@pytest.mark.loop
def test_two_processes_stop_together_resume_and_match_one_process(tmp_path, data_dir):
  two = str(tmp_path / "two")
  procs = _pair(two, data_dir)
  deadline = time.time() + 600
  while not [s for s in _logged_steps(two) if s >= 15]:  # training is under way
    assert time.time() < deadline and all(p.poll() is None for p in procs), \
        [p.communicate()[1][-2000:] for p in procs if p.poll() is not None]
    time.sleep(0.5)
  procs[1].send_signal(signal.SIGTERM)  # one host is preempted
  _finish(procs, status=cli.STOPPED_EXIT)  # both stopped early, and say so
  ckpts = sorted(int(d) for d in os.listdir(os.path.join(two, "checkpoints")) if d.isdigit())
  stopped = ckpts[-1]
  assert 15 <= stopped < STEPS and stopped % 10 == 0  # both saved the same agreed step
  first_segment = _logged_steps(two)
  assert len(first_segment) == len(set(first_segment))  # one writer: no step twice

  _finish(_pair(two, data_dir))  # the same command again resumes
  _finish([_train(str(tmp_path / "one"), data_dir, 4)])
  step_two, p_two = _params(two)
  step_one, p_one = _params(str(tmp_path / "one"))
  assert step_two == step_one == STEPS
  # the same batches, noise and updates; gloo's all-reduce sums in another order than
  # one process does, so the match is within float tolerance, not bit for bit: Adam's
  # first steps turn sign-level rounding of near-zero gradients into lr-sized moves of
  # near-zero parameters, so the comparison is per array, relative to its norm
  errors = jax.tree.map(lambda a, b: float(np.linalg.norm(a - b) / (np.linalg.norm(b) + 1e-12)),
                        p_two, p_one)
  worst = max(jax.tree.leaves(errors))
  print(f"largest relative L2 difference of a parameter array: {worst:.2e}")
  assert worst < 1e-2
  loss = lambda w: [r["train/loss"] for r in _rows(w) if "train/loss" in r][-1]
  np.testing.assert_allclose(loss(two), loss(str(tmp_path / "one")), rtol=1e-3)
  # only process 0 wrote files: one event file per launch, each step logged once per launch
  assert len(glob.glob(os.path.join(two, "events.out.tfevents.*"))) == 2
  resumed = _logged_steps(two)[len(first_segment):]
  assert resumed and min(resumed) > stopped and len(resumed) == len(set(resumed))
  assert sorted(os.listdir(two)).count("config.json") == 1
  assert os.path.exists(os.path.join(two, ".lock.1"))  # process 1 held its own lock


def _restore_pair(directory, damaged, timeout=150):
  """tests/restore_worker.py as two real processes; -> their RESULT dicts. A hang
  (processes waiting in different collectives) fails at the timeout."""
  port = _free_port()
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  procs = [subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "restore_worker.py"),
                             str(port), str(pid), directory, str(damaged)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for pid in (0, 1)]
  try:
    outs = [p.communicate(timeout=timeout) for p in procs]
  except subprocess.TimeoutExpired:
    for p in procs:
      p.kill()
    raise AssertionError(f"the two processes did not finish in {timeout}s: a hang") from None
  results = []
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
    line = [l for l in out.splitlines() if l.startswith("RESULT ")][-1]
    results.append(json.loads(line[len("RESULT "):]))
  return results


def test_a_step_damaged_on_one_process_only_is_skipped_by_both(tmp_path):
  """Process 1 cannot read step 20 (its NFS has not shown it the commit marker);
  process 0 can. Both must restore step 10, and step 20 is set aside once."""
  results = _restore_pair(str(tmp_path / "ckpt"), damaged=1)
  assert [r["step"] for r in results] == [10, 10]
  assert [r["value"] for r in results] == [10.0, 10.0]
  listing = results[0]["listing"]
  assert "10" in listing and "20" not in listing
  assert len([n for n in listing if n.startswith("damaged-20-")]) == 1
