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
# eval.json: the newest evaluation's fields at the top, plus these sections
EVAL_SECTIONS = ("by_step", "before_prune", "prune", "control")
# what defines a run beyond its architecture: resuming with other values would
# silently go on with other data or another objective
RUN_FIELDS = ("seed", "data.name", "data.n_train", "data.n_select", "data.n_test",
              "data.image_size", "data.channels", "data.conditional", "diffusion")


def path(workdir, *parts):
  return os.path.join(workdir, *parts)


def is_writer():
  """Whether this process writes the workdir's files: process 0 of a multi-host run,
  or the only one. Checkpoints are the exception: orbax has every process write
  its own shards."""
  return jax.process_index() == 0


def atomic_write(file, text):
  """Writes text to file via a temporary name and a rename: never half a file.

  Only the writer process writes; the others return without touching the disk.
  """
  if not is_writer():
    return
  os.makedirs(os.path.dirname(os.path.abspath(file)), exist_ok=True)
  tmp = f"{file}.tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
  os.replace(tmp, file)


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
  return configlib.read_json_config(file)


def read_eval(workdir):
  file = path(workdir, EVAL)
  if not os.path.exists(file):
    return {}
  with open(file, encoding="utf-8") as f:
    return json.load(f)


def write_eval(workdir, summary=None, **sections):
  """eval.json: `summary` replaces the top-level fields (none of an older evaluation
  survive beside a newer one); sections replace theirs, by_step merges by step."""
  old = read_eval(workdir)
  unknown = set(sections) - set(EVAL_SECTIONS)
  if unknown:
    raise ValueError(f"eval.json has no sections {sorted(unknown)}; known: {EVAL_SECTIONS}")
  out = {k: v for k, v in old.items() if k in EVAL_SECTIONS or summary is None}
  out.update(summary or {})
  for name, value in sections.items():
    out[name] = dict(old.get(name, {}), **value) if name == "by_step" else value
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


def load(workdir, step=None, mesh=None):
  """(config, setup, state, meta) of a checkpoint, restored into the mesh's shardings.

  For the inference tools (evaluate, sample, prune); the newest step by default.
  """
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
    state, meta = ckpt.restore(state_lib.abstract_state(setup, mesh), step)
  finally:
    ckpt.close()
  return config, setup, state, meta
