"""The workdir: its layout, the files in it, and loading a trained model from it.

    config.json      the resolved config (an older, different one is kept as
                     config.<time>.json, never lost)
    checkpoints/     orbax steps: train state + meta (architecture, run fingerprint)
    metrics.jsonl    one JSON object per logged step (dit_jax.writers)
    eval.json        the evaluation summary, its by-step history and sections
    report/          plots (dit_jax.report); samples/: sample grids
    control/         the equally fine-tuned unpruned control of a pruned run
Every file here is written whole to a temporary name and renamed, so a crash
never leaves half a file.
"""
import json
import os
import tempfile
import time

import jax

from dit_jax import checkpointing
from dit_jax import configlib
from dit_jax import sharding
from dit_jax import state as state_lib
from dit_jax.configlib import ConfigError
from dit_jax.models import dit


CONFIG = "config.json"
CHECKPOINTS = "checkpoints"
METRICS = "metrics.jsonl"
EVAL = "eval.json"
REPORT = "report"
SAMPLES = "samples"
CONTROL = "control"
# eval.json: the newest evaluation's fields at the top, plus these sections;
# `unfinished` is there only while the run that writes the file was stopped before its end
EVAL_SECTIONS = ("by_step", "before_prune", "prune", "control", "unfinished", "tracker_stop")
# what defines a run beyond its architecture: resuming with other values would
# silently go on with other data or another objective
RUN_FIELDS = ("seed", "data.name", "data.n_train", "data.n_select", "data.n_test",
              "data.image_size", "data.channels", "data.conditional", "diffusion")


def path(workdir, *parts):
  return os.path.join(workdir, *parts)


def check_local(workdir):
  """Refuses an object-store URL (gs://, s3://, ...) as a workdir, before anything runs.

  The workdir needs a POSIX filesystem: the one-run lock is an flock, every file is
  written by rename, metrics.jsonl is appended to, and os.path would otherwise read
  `gs://b/run` as the local folder `gs:/b/run`. Checkpoints alone could go to a bucket
  (orbax writes them through etils.epath), the rest cannot yet.
  """
  scheme, sep, _ = str(workdir).partition("://")
  if sep and scheme.isidentifier():
    raise ConfigError(
        f"workdir {workdir}: {scheme}:// is not supported, a workdir must be a path on a "
        "mounted filesystem (it takes a file lock and renames files). Use a local disk or "
        "a shared mount (NFS, Lustre with -o flock, a Filestore) and copy the finished "
        "workdir to the bucket (e.g. gsutil -m rsync -r W gs://...).")


def is_writer():
  """Whether this process writes the workdir's files: process 0 of a multi-host run,
  or the only one. Checkpoints are the exception: orbax has every process write
  its own shards."""
  return jax.process_index() == 0


def atomic_write(file, text):
  """Writes text to file via a temporary name and a rename: never half a file.

  The temporary name is unique, so two writers (a run and scripts/evaluate.py, two
  sweeps) never write into one temporary file; the file and then its directory are
  fsynced, so after a power cut the name points at the whole new text or the old one.
  Only the writer process writes; the others return without touching the disk.
  """
  if not is_writer():
    return
  directory = os.path.dirname(os.path.abspath(file))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(file)}.", suffix=".tmp",
                             dir=directory)
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide results from the user's group
    os.replace(tmp, file)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  _fsync_dir(directory)


def _fsync_dir(directory):
  """Makes a rename in directory durable (a no-op where the OS cannot open one)."""
  try:
    fd = os.open(directory, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:  # some network filesystems refuse fsync on a directory
    pass
  finally:
    os.close(fd)


def _read_json(file, what):
  """The JSON in file; a torn or hand-broken one is a clear error naming it."""
  with open(file, encoding="utf-8") as f:
    text = f.read()
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise ConfigError(
        f"{file} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}): {what}"
    ) from None


def write_config(config, workdir):
  """Writes config.json; an older, different one is kept beside it, never lost."""
  if not is_writer():
    return
  file = path(workdir, CONFIG)
  text = config.to_json_best_effort(indent=2, sort_keys=True)
  if os.path.exists(file):
    with open(file, encoding="utf-8") as f:
      old = f.read()
    if old and old != text:
      os.replace(file, path(workdir, f"config.{int(time.time())}.json"))
  atomic_write(file, text)


def read_config(workdir):
  """config.json on top of the base config (a field added since then takes its default)."""
  file = path(workdir, CONFIG)
  if not os.path.exists(file):
    raise ConfigError(f"{file} not found: is {workdir!r} a training workdir?")
  return configlib.read_json_config(
      file, "restore it from config.<time>.json beside it or from the command that "
      "started the run, or use a new --workdir.")


def read_eval(workdir):
  file = path(workdir, EVAL)
  if not os.path.exists(file):
    return {}
  return _read_json(file, "move it aside (the checkpoints are intact) and run "
                    "scripts/evaluate.py on the workdir to write it again.")


def write_eval(workdir, summary=None, **sections):
  """eval.json: `summary` replaces the top-level fields (none of an older evaluation
  survive beside a newer one); sections replace theirs (None removes one), by_step
  merges by step."""
  old = read_eval(workdir)
  unknown = set(sections) - set(EVAL_SECTIONS)
  if unknown:
    raise ValueError(f"eval.json has no sections {sorted(unknown)}; known: {EVAL_SECTIONS}")
  out = {k: v for k, v in old.items() if k in EVAL_SECTIONS or summary is None}
  out.update(summary or {})
  for name, value in sections.items():
    if value is None:
      out.pop(name, None)
    else:
      out[name] = dict(old.get(name, {}), **value) if name == "by_step" else value
  if out == old:
    return out  # nothing new: leave the file (or its absence) alone
  atomic_write(path(workdir, EVAL), json.dumps(out, indent=2, sort_keys=True))
  return out


def run_fingerprint(config):
  """{field: value} of RUN_FIELDS (and data.gmm for gmm), as JSON gives them back."""
  fields = RUN_FIELDS + (("data.gmm",) if config.data.name == "gmm" else ())
  out = {}
  for field in fields:
    value = configlib.get_field(config, field)
    out[field] = value.to_dict() if hasattr(value, "to_dict") else value
  return json.loads(json.dumps(out))


def check_fingerprint(stored, config, directory):
  """Refuses to resume a workdir whose run was defined differently."""
  if stored is None:  # written before fingerprints existed
    return
  now = run_fingerprint(config)
  differ = sorted(k for k in set(stored) | set(now) if stored.get(k) != now.get(k))
  if differ:
    detail = "; ".join(f"config.{k}: {stored.get(k)!r} in the checkpoints, {now.get(k)!r} "
                       "now" for k in differ)
    raise ConfigError(
        f"{directory} holds a run with other settings ({detail}). Resume with the values "
        "the run was started with, or use a new --workdir (nothing in this one was changed).")


def load(workdir, step=None, mesh=None, keys=None):
  """(config, setup, state, meta) of a checkpoint, restored into the mesh's shardings.

  For the inference tools (evaluate, sample, prune); the newest step by default.
  `keys` (e.g. ("ema",)): restore only those parts of the train state.
  """
  check_local(workdir)
  config = read_config(workdir)
  ckpt = checkpointing.Checkpointer(os.path.abspath(path(workdir, CHECKPOINTS)),
                                    config.checkpoint.keep, async_save=False)
  try:
    step = ckpt.latest_step() if step is None else step
    if step is None:
      raise ConfigError(f"no checkpoint in {path(workdir, CHECKPOINTS)} yet.")
    meta = ckpt.restore_meta(step)
    setup = state_lib.make_setup(config, dit.Arch.from_json(meta["arch"]))
    mesh = mesh or sharding.make_mesh()
    state, meta = ckpt.restore(state_lib.abstract_state(setup, mesh), step, keys)
  finally:
    ckpt.close()
  return config, setup, state, meta
