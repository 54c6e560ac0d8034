"""The workdir's files under crashes and second writers: atomic writes with unique
temporaries, torn metrics lines, corrupt JSON, the lock against scripts/evaluate.py,
and filesystems without flock."""
import errno
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import time

import pytest

from dit_jax.study import sweep
from dit_jax import workdir as workdir_lib
from dit_jax import workdir_lock
from dit_jax import writers
from dit_jax.configlib import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_atomic_write_uses_a_unique_temporary_and_syncs_file_and_directory(
    tmp_path, monkeypatch):
  renamed, synced = [], []
  real_replace, real_fsync = os.replace, os.fsync
  monkeypatch.setattr(os, "replace", lambda a, b: (renamed.append(a), real_replace(a, b)))
  monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.fstat(fd).st_mode),
                                               real_fsync(fd)))
  file = str(tmp_path / "eval.json")
  workdir_lib.atomic_write(file, "one")
  workdir_lib.atomic_write(file, "two")
  assert open(file, encoding="utf-8").read() == "two"
  # two writers of one file (a run and an evaluation) never share a temporary file
  assert len(set(renamed)) == 2 and f"{file}.tmp" not in renamed
  assert all(os.path.dirname(t) == str(tmp_path) for t in renamed)  # same filesystem
  assert sorted(os.listdir(tmp_path)) == ["eval.json"]  # no temporary left behind
  # per write: the file's bytes, then the directory entry of the rename
  assert [stat.S_ISDIR(m) for m in synced] == [False, True, False, True]


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
  file = str(tmp_path / "eval.json")
  workdir_lib.atomic_write(file, "old")

  def full_disk(fd):
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(os, "fsync", full_disk)
  with pytest.raises(OSError):
    workdir_lib.atomic_write(file, "new")
  assert open(file, encoding="utf-8").read() == "old"
  assert sorted(os.listdir(tmp_path)) == ["eval.json"]


def test_a_torn_metrics_line_is_skipped_with_a_warning_and_the_next_row_kept(
    tmp_path, caplog):
  w = str(tmp_path)
  with open(os.path.join(w, "metrics.jsonl"), "w", encoding="utf-8") as f:
    f.write(json.dumps({"step": 1, "train/loss": 1.0}) + "\n")
    f.write(json.dumps({"step": 2, "train/loss": 0.5}) + "\n")
    f.write('{"step": 3, "train/lo')  # killed in the middle of a write
  with caplog.at_level(logging.WARNING, logger="dit_jax"):
    rows = writers.read_metrics(w)
  assert [r["step"] for r in rows] == [1, 2]
  assert "line 3 is not a whole metrics row" in caplog.text
  # a resumed run appends after the torn fragment: its row is whole and read back
  writer = writers.MetricWriter(w, tensorboard=False)
  writer.write(3, {"train/loss": 0.25})
  writer.close()
  assert [(r["step"], r["train/loss"]) for r in writers.read_metrics(w)] == [
      (1, 1.0), (2, 0.5), (3, 0.25)]


@pytest.mark.parametrize("name,read", [("eval.json", workdir_lib.read_eval),
                                       ("config.json", workdir_lib.read_config)])
def test_a_corrupt_json_file_is_a_clear_error_naming_it(tmp_path, name, read):
  file = os.path.join(tmp_path, name)
  with open(file, "w", encoding="utf-8") as f:
    f.write('{"step": 3, "mem_')  # torn, or broken by hand
  with pytest.raises(ConfigError, match=f"{file} is not valid JSON") as info:
    read(str(tmp_path))
  assert "line 1" in str(info.value)


def test_evaluate_script_is_refused_while_a_run_holds_the_workdir(tmp_path):
  w = str(tmp_path / "w")
  lock = workdir_lock.acquire(w)  # as a training run holds it
  try:
    done = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "evaluate.py"),
                           "--workdir", w], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
  finally:
    workdir_lock.release(lock)
  assert done.returncode != 0
  last = done.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and f"(pid {os.getpid()}) holds workdir {w}" in last, \
      done.stderr[-2000:]
  assert "scripts/evaluate.py does not run beside it" in last
  assert os.listdir(w) == [".lock"]  # nothing written


def test_a_filesystem_without_flock_is_named_as_such(tmp_path, monkeypatch):
  def no_flock(*args):
    raise OSError(errno.ENOSYS, "Function not implemented")

  monkeypatch.setattr(workdir_lock.fcntl, "flock", no_flock)
  with pytest.raises(workdir_lock.WorkdirError) as info:
    workdir_lock.acquire(str(tmp_path / "w"))
  text = str(info.value)
  assert "filesystem without file locks" in text and "-o flock" in text
  assert "not writable" not in text and "permission" not in text.lower()


def _sweep_base(tmp_path):
  """A sweep workdir whose point `base` has a (fake) checkpoint at step 10."""
  step = tmp_path / "base" / "checkpoints" / "10"
  (step / "state").mkdir(parents=True)
  (step / "state" / "array").write_bytes(b"\1" * 1000)
  (step / "commit_success.txt").write_text("done")
  return {"name": "p", "start_from": ("base", 10)}, str(tmp_path / "p")


def test_only_process_0_copies_a_sweep_points_start_and_the_others_wait(
    tmp_path, monkeypatch):
  point, pdir = _sweep_base(tmp_path)
  waits = []
  monkeypatch.setattr(sweep.distributed, "barrier", waits.append)
  monkeypatch.setattr(workdir_lib, "is_writer", lambda: False)
  sweep._start(point, pdir, str(tmp_path))  # pylint: disable=protected-access
  assert not os.path.exists(pdir) and len(waits) == 1  # copied nothing, waited
  monkeypatch.setattr(workdir_lib, "is_writer", lambda: True)
  sweep._start(point, pdir, str(tmp_path))  # pylint: disable=protected-access
  assert len(waits) == 2
  assert os.listdir(pdir) == ["checkpoints"]  # no temporary left
  assert open(os.path.join(pdir, "checkpoints", "10", "state", "array"), "rb").read() == \
      b"\1" * 1000


def test_a_sweep_copy_cut_short_leaves_no_checkpoints_to_resume_from(tmp_path, monkeypatch):
  point, pdir = _sweep_base(tmp_path)
  monkeypatch.setattr(sweep.distributed, "barrier", lambda name: None)
  real_copy = shutil.copyfile

  def full_disk(src, dst, **kwargs):
    if os.fspath(src).endswith("array"):
      raise OSError(errno.ENOSPC, "No space left on device")
    return real_copy(src, dst, **kwargs)

  monkeypatch.setattr(shutil, "copyfile", full_disk)
  with pytest.raises(shutil.Error):
    sweep._start(point, pdir, str(tmp_path))  # pylint: disable=protected-access
  # the next command sees no checkpoints/ and copies again, instead of resuming a part
  assert not os.path.exists(os.path.join(pdir, "checkpoints"))
  monkeypatch.setattr(shutil, "copyfile", real_copy)
  sweep._start(point, pdir, str(tmp_path))  # pylint: disable=protected-access
  assert os.path.exists(os.path.join(pdir, "checkpoints", "10", "state", "array"))


def test_a_resumed_writer_tells_tensorboard_to_drop_the_steps_after_the_checkpoint(tmp_path):
  from tests.test_exits import _purge_steps  # pylint: disable=import-outside-toplevel
  w = str(tmp_path)
  first = writers.MetricWriter(w)
  for step in (5, 10, 15):  # 15 was logged, then the run died before checkpointing it
    first.write(step, {"train/loss": 1.0 / step})
  first.close()
  time.sleep(1.1)  # event files are named by the second: a new one, as a restart makes
  again = writers.MetricWriter(w, resume_step=10)
  again.write(15, {"train/loss": 0.5})
  again.close()
  assert _purge_steps(w) == [[1], [11]]


@pytest.mark.parametrize("url", ["gs://bucket/run", "s3://bucket/run"])
def test_an_object_store_workdir_is_refused_before_anything_runs(tmp_path, monkeypatch,
                                                                 data_dir, url):
  from tests.test_train import tiny  # pylint: disable=import-outside-toplevel
  from dit_jax import cli, train  # pylint: disable=import-outside-toplevel
  monkeypatch.chdir(tmp_path)
  for attempt in (lambda: train.train_and_evaluate(tiny(data_dir), url),
                  lambda: workdir_lib.load(url),
                  lambda: cli.locked_workdir(url, "scripts/evaluate.py").__enter__()):
    with pytest.raises(ConfigError, match=f"{url.split(':')[0]}:// is not supported"):
      attempt()
  assert os.listdir(tmp_path) == []  # no local folder named "gs:" or "s3:"
