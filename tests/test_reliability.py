"""Faults a long run meets: kill -9, damaged checkpoints, SIGTERM, a taken, read-only
or full workdir, a missing dataset. Nothing that was saved complete may be lost.

The long kill loop: `pytest -m slow tests/test_reliability.py` (DIT_KILL_TRIALS=20).
"""
import contextlib
import glob
import hashlib
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from dit_jax import checkpointing, cli, train, workdir as workdir_lib, workdir_lock
from tests import kill_loop
from tests.test_train import tiny

STEPS, EVERY = 20, 5  # checkpoints at 10, 15, 20 remain (keep=3)


def config(data_dir, **overrides):
  return tiny(data_dir, **{"train.steps": STEPS, "checkpoint.every": EVERY,
                           "memo.every": 0, **overrides})


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, data_dir):
  """A finished run's workdir and its final state: what damaged copies must get back to."""
  w = str(tmp_path_factory.mktemp("pristine") / "w")
  train.train_and_evaluate(config(data_dir), w)
  return w, kill_loop.final_state(w)[0]


def digest(path):
  """One hash of every file's name and bytes under path."""
  h = hashlib.sha256()
  for f in sorted(glob.glob(os.path.join(path, "**"), recursive=True)):
    if os.path.isfile(f):
      h.update(os.path.relpath(f, path).encode())
      with open(f, "rb") as fh:
        h.update(fh.read())
  return h.hexdigest()


def largest_array_file(step_dir):
  return max(glob.glob(os.path.join(step_dir, "*", "**", "d", "*"), recursive=True),
             key=os.path.getsize)


def truncate(path):
  os.truncate(path, os.path.getsize(path) // 2)


def flip_bytes(path):
  with open(path, "r+b") as f:
    f.seek(os.path.getsize(path) // 2)
    chunk = f.read(16)
    f.seek(-len(chunk), os.SEEK_CUR)
    f.write(bytes(b ^ 0xFF for b in chunk))


DAMAGE = {
    "truncated array file": lambda d: truncate(largest_array_file(d)),
    "flipped bytes, read back silently": lambda d: flip_bytes(largest_array_file(d)),
    "no commit marker": lambda d: os.remove(os.path.join(d, "commit_success.txt")),
    "truncated meta": lambda d: truncate(os.path.join(d, "meta", "metadata")),
}


@pytest.mark.loop
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_newest_checkpoint_falls_back_and_is_kept(
    tmp_path, data_dir, pristine, damage, caplog):
  w = str(tmp_path / "w")
  shutil.copytree(pristine[0], w)
  ckpts = os.path.join(w, "checkpoints")
  newest = os.path.join(ckpts, str(STEPS))
  DAMAGE[damage](newest)
  damaged = digest(newest)

  with caplog.at_level(logging.WARNING, logger="dit_jax"):
    run = train.train_and_evaluate(config(data_dir), w)
  warnings = "\n".join(r.getMessage() for r in caplog.records)
  assert f"skipping damaged checkpoint {newest}" in warnings
  assert "moved damaged checkpoint" in warnings
  # kept byte for byte beside the steps, out of orbax's way
  aside = glob.glob(os.path.join(ckpts, f"damaged-{STEPS}-*"))
  assert len(aside) == 1 and digest(aside[0]) == damaged
  # resumed from 15, redid 16..20 and saved 20 again; the older steps were not collected
  assert sorted(run.ckpt.all_steps()) == [10, 15, 20]
  assert kill_loop.states_equal(kill_loop.final_state(w)[0], pristine[1])


@pytest.mark.loop
def test_no_readable_checkpoint_changes_nothing(tmp_path, data_dir, pristine):
  w = str(tmp_path / "w")
  shutil.copytree(pristine[0], w)
  ckpts = os.path.join(w, "checkpoints")
  for step in (10, 15, 20):
    os.remove(os.path.join(ckpts, str(step), "commit_success.txt"))
  before = digest(ckpts)
  with pytest.raises(checkpointing.DamagedCheckpointError, match="Nothing was moved"):
    train.train_and_evaluate(config(data_dir), w)
  assert digest(ckpts) == before


@pytest.mark.loop
def test_kill_9_at_random_moments_loses_nothing(tmp_path, data_dir, pristine):
  """The short version of tests/kill_loop.py (which see for the long one)."""
  trials = int(os.environ.get("DIT_KILL_TRIALS_SHORT", "3"))
  tally = kill_loop.kill_loop(trials, data_dir, str(tmp_path), seed=1, steps=STEPS, every=2,
                              reference=pristine[1], train_secs=2.5, say=lambda _: None)
  assert tally["kills"] == trials
  assert tally["wrong_resumes"] == [] and tally["damaged_warnings"] == 0
  assert tally["runs"] and tally["runs_equal"] == tally["runs"], tally


@pytest.mark.slow
def test_kill_loop_long(tmp_path, data_dir):
  trials = int(os.environ.get("DIT_KILL_TRIALS", "20"))
  tally = kill_loop.kill_loop(trials, data_dir, str(tmp_path), seed=0, steps=40, every=2)
  print(tally)
  assert tally["wrong_resumes"] == [] and tally["damaged_warnings"] == 0
  assert tally["runs_equal"] == tally["runs"], tally


@pytest.mark.loop
def test_sigterm_checkpoints_and_exits_in_bounded_time(tmp_path, data_dir):
  w, log_path = str(tmp_path / "w"), str(tmp_path / "train.log")
  cmd = kill_loop.train_command(w, data_dir, 100_000, 1000)
  proc = kill_loop.start(cmd, log_path)
  try:
    assert kill_loop.wait_for(proc, log_path, kill_loop.STARTED), kill_loop.read(log_path)
    time.sleep(1.5)  # into the steps, where the handler is installed
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=120)
    took = time.monotonic() - sent
  finally:
    if proc.poll() is None:
      proc.kill()
  text = kill_loop.read(log_path)
  assert rc == cli.STOPPED_EXIT, text[-3000:]  # stopped before its end: not 0
  assert took < 60, f"exit took {took:.1f}s"
  stopped = int(re.findall(r"checkpoint at step (\d+)", text)[-1])
  assert 0 < stopped < 100_000
  assert kill_loop.newest_complete(os.path.join(w, "checkpoints")) == stopped
  assert kill_loop.final_state(w)[1]["step"] == stopped
  assert workdir_lib.read_eval(w)["unfinished"] == {
      "finished": False, "step": stopped, "steps": 100_000, "sections": []}


def test_second_run_is_refused_and_a_killed_run_leaves_no_lock(tmp_path, data_dir):
  w = str(tmp_path / "w")
  hold = ("import sys, time; from dit_jax import workdir_lock; "
          "lock = workdir_lock.acquire(sys.argv[1]); print('locked', flush=True); "
          "time.sleep(600)")
  holder = subprocess.Popen([sys.executable, "-c", hold, w], stdout=subprocess.PIPE,
                            text=True, cwd=kill_loop.ROOT)  # takes the lock as a run would
  try:
    assert holder.stdout.readline().strip() == "locked"
    log_path = str(tmp_path / "second.log")
    second = kill_loop.start(kill_loop.train_command(w, data_dir, STEPS, EVERY), log_path)
    assert second.wait(timeout=300) != 0
    text = kill_loop.read(log_path)
    assert f"error: another run (pid {holder.pid}) is training in workdir {w}" in text
    assert "Traceback" not in text
    assert not os.path.exists(os.path.join(w, "checkpoints"))
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  lock = workdir_lock.acquire(w)  # the kernel dropped the dead holder's lock
  with pytest.raises(workdir_lock.WorkdirError, match="an earlier run in this process"):
    train.train_and_evaluate(config(data_dir), w)
  workdir_lock.release(lock)


def test_missing_dataset_is_a_clear_error_and_no_workdir(tmp_path, data_dir):
  for name, phrase in ((f"npz:{tmp_path}/none.npz", "file not found"),
                       (f"folder:{tmp_path}/none", "not found")):
    w = tmp_path / "w"
    with pytest.raises(ValueError, match=phrase):
      train.train_and_evaluate(config(data_dir, **{"data.name": name}), str(w))
    assert not w.exists()


@contextlib.contextmanager
def mounted_tmpfs(path, options):
  """A tmpfs at path (root only; skips elsewhere); unmounted afterwards."""
  os.makedirs(path, exist_ok=True)
  if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", path],
                                         capture_output=True, check=False).returncode:
    pytest.skip("needs root and mount to make a small or read-only disk")
  try:
    yield path
  finally:
    subprocess.run(["umount", "-l", path], check=False)


def test_read_only_workdir_is_refused_before_training(tmp_path, data_dir):
  ro = str(tmp_path / "ro")
  if os.geteuid() != 0:  # permissions stop everyone but root
    os.makedirs(ro)
    os.chmod(ro, 0o555)
    context = contextlib.nullcontext(ro)
  else:
    context = mounted_tmpfs(ro, "ro,size=1m")
  with context:
    for w in (ro, os.path.join(ro, "new")):
      with pytest.raises(workdir_lock.WorkdirError, match="not writable"):
        train.train_and_evaluate(config(data_dir), w)


@pytest.mark.loop
def test_full_disk_before_and_during_the_run_loses_nothing(tmp_path, data_dir, pristine):
  disk = str(tmp_path / "disk")
  with mounted_tmpfs(disk, "size=512k"):
    with pytest.raises(workdir_lock.WorkdirError, match="MiB free"):
      train.train_and_evaluate(config(data_dir), os.path.join(disk, "w"))
  with mounted_tmpfs(disk, "size=4608k"):  # room for the first checkpoint, not a second
    w = os.path.join(disk, "w")
    with pytest.raises(checkpointing.CheckpointWriteError, match="the disk is full"):
      train.train_and_evaluate(config(data_dir, **{"log_every": 1000}), w)
    assert kill_loop.final_state(w)[1]["step"] == EVERY  # the first one is whole
    subprocess.run(["mount", "-o", "remount,size=32m", disk], check=True)
    train.train_and_evaluate(config(data_dir), w)  # space freed: resume and finish
    assert kill_loop.states_equal(kill_loop.final_state(w)[0], pristine[1])


def test_a_failed_metrics_flush_does_not_hide_the_first_error(tmp_path, caplog):
  # on a full disk the event file's last flush fails after the checkpoint did
  from dit_jax import writers
  w = writers.MetricWriter(str(tmp_path))
  w.write(1, {"train/loss": 0.5})

  def full():
    raise OSError(28, "No space left on device")

  w._tb.close = full
  with caplog.at_level(logging.WARNING, logger="dit_jax"):
    w.close(quiet=True)  # what train_and_evaluate does while another error propagates
  assert "not fully written" in caplog.text
  w2 = writers.MetricWriter(str(tmp_path / "b"))
  w2._tb.close = full
  with pytest.raises(OSError):
    w2.close()
