"""Checks a whole config before anything runs, and spells out what it leaves implicit.

validate() raises ConfigError naming the field and the fix, cheaply, before any
data loads or anything compiles; each section is checked by the module that
reads it (data, diffusion, models.dit, pruning), the loop's own fields here.
"""
import math

import ml_collections

from dit_jax import configlib
from dit_jax import data as data_lib
from dit_jax import diffusion
from dit_jax import latents
from dit_jax import likelihood
from dit_jax import pruning
from dit_jax.configlib import ConfigError, check_choice, check_int
from dit_jax.models import dit

# integer fields and the least value of each
_LEAST = (("seed", 0), ("seeds", 1), ("train.steps", 1), ("train.batch_size", 1), ("train.warmup_steps", 0),
          ("log_every", 1), ("checkpoint.every", 1), ("checkpoint.keep", 1),
          ("sample.every", 0), ("sample.num", 0), ("sample.steps", 1), ("memo.every", 0),
          ("memo.probe", 1), ("memo.buckets", 1), ("eval.num", 0), ("eval.feature_steps", 1))
# float fields: the test each must pass, and what it asks for
_RANGES = (("train.lr", lambda v: v > 0, "> 0"),
           ("train.weight_decay", lambda v: v >= 0, ">= 0"),
           ("train.grad_clip", lambda v: v >= 0, ">= 0 (0: no clipping)"),
           ("train.b1", lambda v: 0 <= v < 1, "in [0, 1)"),
           ("train.b2", lambda v: 0 <= v < 1, "in [0, 1)"),
           ("train.ema_decay", lambda v: 0 <= v < 1, "in [0, 1)"))


def _check_finite(node, name="config"):
  """NaN or inf anywhere (a typo'd override) is named before it reaches a computation."""
  if isinstance(node, float) and not math.isfinite(node):
    raise ConfigError(f"{name} must be a finite number, got {node!r}.")
  items = (node.items() if isinstance(node, dict) else
           enumerate(node) if isinstance(node, (tuple, list)) else ())
  for key, value in items:
    _check_finite(value, f"{name}.{key}" if isinstance(node, dict) else f"{name}[{key}]")


def _check_loop(config, num_devices):
  """The fields the training loop itself reads."""
  for field, least in _LEAST:
    check_int(configlib.get_field(config, field), field, least)
  for field, ok, wanted in _RANGES:
    value = configlib.get_field(config, field)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
      raise ConfigError(f"config.{field} must be {wanted}, got {value!r}.")
  check_int(config.train.grad_accum, "train.grad_accum")
  per_step = num_devices * config.train.grad_accum
  if config.train.batch_size % per_step:
    raise ConfigError(
        f"config.train.batch_size={config.train.batch_size} is not divisible by the "
        f"{num_devices} devices of the mesh times config.train.grad_accum="
        f"{config.train.grad_accum}; use a multiple of {per_step}.")
  if not isinstance(config.train.remat, bool):
    raise ConfigError(f"config.train.remat must be True or False, got {config.train.remat!r}.")
  if not config.train.peak_flops >= 0:
    raise ConfigError(f"config.train.peak_flops must be >= 0 (0: known or measured), got "
                      f"{config.train.peak_flops!r}.")
  check_choice(config.train.lr_schedule, "train.lr_schedule", ("constant", "cosine"))
  check_choice(config.sample.method, "sample.method", diffusion.SAMPLERS)
  check_choice(config.eval.fid, "eval.fid", ("auto", "on", "off"))
  check_int(config.eval.fid_batch, "eval.fid_batch")
  _check_stop_at(config)
  bad = [s for s in config.eval.at_steps
         if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= config.train.steps]
  if bad:
    raise ConfigError(f"config.eval.at_steps has {bad}: use steps in [0, train.steps="
                      f"{config.train.steps}].")


def _check_stop_at(config):
  """memo.stop_at: a tracker that runs, and no prune that it could skip (seeds trained
  together refuse it: dit_jax.seeds.check_config)."""
  stop_at = config.memo.stop_at
  if isinstance(stop_at, bool) or not isinstance(stop_at, (int, float)) or stop_at < 0:
    raise ConfigError(f"config.memo.stop_at must be a number >= 0 (0: no tracker stop), got "
                      f"{stop_at!r}.")
  if not stop_at:
    return
  if config.memo.every <= 0:
    raise ConfigError(f"config.memo.stop_at={stop_at} stops on the tracker's reading, but "
                      "config.memo.every=0 turns the tracker off; set memo.every > 0 (e.g. "
                      "250) or memo.stop_at=0.")
  if config.prune.at_step >= 0:
    raise ConfigError(f"config.memo.stop_at={stop_at} with config.prune.at_step="
                      f"{config.prune.at_step}: a tracker stop could end training before "
                      "the prune. Use one: memo.stop_at=0, or prune.at_step=-1 (and prune "
                      "the stopped run with scripts/prune.py).")


def validate(config, num_devices=1):
  """Raises ConfigError naming the field and the fix; runs before any compile."""
  _check_finite(config.to_dict())
  _check_loop(config, num_devices)
  pruning.check_config(config.prune, config.train.steps)
  try:
    data_lib.check_config(config.data)
  except ConfigError:
    raise
  except ValueError as e:  # e.g. TFDS's own name parsing, which does not name the field
    raise ConfigError(f"config.data does not work ({str(e).splitlines()[0]}); check "
                      f"config.data.name={config.data.name!r} and its settings.") from e
  diffusion.check_config(config.diffusion)
  likelihood.check_config(config.eval)
  # the architecture (divisibility, per-block lists) before any data loads
  dit.arch_from_config(config.model, latents.model_image_size(config.data),
                       config.data.channels, 0)


def finalize(config):
  """A copy with the model's per-block widths spelled out (config.json records them).

  Idempotent: a finalized config (a workdir's config.json) comes back unchanged.
  """
  config = ml_collections.ConfigDict(config.to_dict())
  _check_finite(config.to_dict())
  m = config.model
  m.hidden, m.depth, m.heads, m.mlp, m.head_dim = dit.widths(m)
  return config
