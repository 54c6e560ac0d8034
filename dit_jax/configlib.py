"""Config helpers: string arguments of get_config, the shared base config, checks."""
import importlib.util
import math
import os

import ml_collections
from ml_collections.config_dict import placeholder

from dit_jax import data as data_lib
from dit_jax import diffusion
from dit_jax.models import dit


def parse_arg(arg, **defaults):
  """'runlocal,n=64,variant=S/2' -> ConfigDict(runlocal=True, n=64, variant='S/2').

  Each key must appear in `defaults`, whose values fix the type.
  """
  out = ml_collections.ConfigDict(dict(defaults, runlocal=False))
  for item in filter(None, (arg or "").split(",")):
    key, eq, value = item.partition("=")
    if key not in out:
      raise ValueError(f"config argument {key!r} unknown; known: {sorted(out)}")
    if not eq:
      out[key] = True
    elif isinstance(out[key], bool):
      out[key] = value.lower() in ("1", "true", "yes")
    else:
      out[key] = type(out[key])(value) if out[key] is not None else value
  return out


def load_config_file(path, arg=None):
  """get_config(arg) of a config file given by path (sweeps build on the configs)."""
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def with_overrides(config, overrides):
  """A copy of `config` with dotted-key overrides applied ({"train.steps": 10})."""
  config = ml_collections.ConfigDict(config.to_dict())
  for key, value in overrides.items():
    node = config
    *path, last = key.split(".")
    for p in path:
      node = node[p]
    node[last] = value
  return config


def base_config():
  """Fields every config shares; experiment configs override what differs."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.data = dict(name="digits", n_train=32, n_heldout=512, image_size=8,
                channels=1, data_dir=placeholder(str), conditional=False,
                gmm=dict(k=8, scale=2.0, cov_scale=1.0, cov_diag=placeholder(tuple),
                         size=20000, data_seed=0))
  c.model = dict(variant="tiny/2", hidden=0, depth=0, heads=(), mlp=(),
                 mlp_ratio=4.0, dtype="float32", class_dropout=0.1)
  c.diffusion = dict(schedule="ddpm_linear", num_steps=1000, t0=1e-3,
                     t_max=10.0, weighting="eps")
  c.train = dict(steps=6000, batch_size=32, lr=1e-3, warmup_steps=200,
                 lr_schedule="constant", weight_decay=0.0, b1=0.9, b2=0.999,
                 grad_clip=1.0, ema_decay=0.999)
  c.mesh = dict(fsdp=False)
  c.log_every = 100
  c.checkpoint = dict(every=1000, keep=3)
  c.sample = dict(every=2000, num=64, method="ddim", steps=50, guidance=1.0)
  c.memo = dict(every=250, probe=32, buckets=8)
  c.eval = dict(num=512, at_end=True, feature_steps=500)
  # at_step < 0: no pruning. finetune_steps > 0 sets train.steps = at_step + finetune_steps.
  c.prune = dict(at_step=-1, ratio=0.2, mlp_ratio=0.0, method="head_grad",
                 finetune_steps=0, target="ratio", use_ema=False, batches=16,
                 t_beta=(0.8, 2.0),  # t / T ~ Beta(a, b) for the importance batches
                 batch_size=64, min_heads=1, mlp_multiple=8, eval_before=True,
                 tolerance=0.1, capacity_ratios=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7),
                 capacity_steps=100, capacity_probe=256,
                 ema_restart=True)  # the EMA restarts as a running mean at the prune
  return c


def _positive_int(value, field):
  if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
    raise ValueError(f"config.{field} must be a positive integer, got {value!r}.")


# integer fields validate() checks beyond the positive ones, and the least value of each
_LEAST = (("seed", 0), ("train.warmup_steps", 0), ("model.hidden", 0), ("model.depth", 0),
          ("diffusion.num_steps", 2), ("sample.every", 0), ("sample.num", 0),
          ("sample.steps", 1), ("memo.every", 0))
# float fields: the test each must pass, and what it asks for
_RANGES = (("train.weight_decay", lambda v: v >= 0, ">= 0"),
           ("train.grad_clip", lambda v: v >= 0, ">= 0 (0: no clipping)"),
           ("train.b1", lambda v: 0 <= v < 1, "in [0, 1)"),
           ("train.b2", lambda v: 0 <= v < 1, "in [0, 1)"),
           ("model.mlp_ratio", lambda v: v > 0, "> 0"),
           ("model.class_dropout", lambda v: 0 <= v <= 1, "in [0, 1]"))


def _field(config, field):
  for part in field.split("."):
    config = config.get(part) if config is not None else None
  return config


def _check_finite(node, name="config"):
  """NaN or inf anywhere (a typo'd override) is named before it reaches a computation."""
  if isinstance(node, float) and not math.isfinite(node):
    raise ValueError(f"{name} must be a finite number, got {node!r}.")
  items = (node.items() if isinstance(node, dict) else
           enumerate(node) if isinstance(node, (tuple, list)) else ())
  for key, value in items:
    _check_finite(value, f"{name}.{key}" if isinstance(node, dict) else f"{name}[{key}]")


def _check_raw(config):
  """What finalize() computes with: NaN, inf or an absurd depth fail by name, not deep inside."""
  _check_finite(config.to_dict())
  depth = config.model.get("depth", 0)
  if isinstance(depth, bool) or not isinstance(depth, int) or not 0 <= depth <= 1024:
    raise ValueError(f"config.model.depth must be an integer in [0, 1024] (0: the "
                     f"variant's), got {depth!r}.")


def _check_ranges(config):
  """What the fields named in _LEAST, _RANGES and config.model's per-block lists allow."""
  _check_finite(config.to_dict())
  for field, least in _LEAST:
    value = _field(config, field)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                              or value < least):
      raise ValueError(f"config.{field} must be an integer >= {least}, got {value!r}.")
  for field, ok, wanted in _RANGES:
    value = _field(config, field)
    if value is not None and (isinstance(value, bool) or not ok(value)):
      raise ValueError(f"config.{field} must be {wanted}, got {value!r}.")
  for field in ("heads", "mlp"):  # spelled out per block by finalize()
    values = config.model.get(field) or ()
    if any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in values):
      raise ValueError(f"config.model.{field} entries must be positive integers, "
                       f"got {values!r}.")


def validate(config, num_devices=1):
  """Raises ValueError naming the field and the fix; cheap, runs before any compile."""
  _positive_int(config.train.steps, "train.steps")
  _positive_int(config.train.batch_size, "train.batch_size")
  if config.train.batch_size % num_devices:
    raise ValueError(
        f"config.train.batch_size={config.train.batch_size} is not divisible by the "
        f"{num_devices} devices of the mesh; use a multiple of {num_devices}.")
  if not config.train.lr > 0:
    raise ValueError(f"config.train.lr must be > 0, got {config.train.lr!r}.")
  if config.train.lr_schedule not in ("constant", "cosine"):
    raise ValueError(f"config.train.lr_schedule={config.train.lr_schedule!r}: "
                     "use 'constant' or 'cosine'.")
  if not 0 <= config.train.ema_decay < 1:
    raise ValueError(f"config.train.ema_decay must be in [0, 1), got {config.train.ema_decay!r}.")
  for field in ("log_every", "checkpoint.every", "checkpoint.keep"):
    _positive_int(config[field] if "." not in field else
                  config[field.split(".")[0]][field.split(".")[1]], field)
  _check_ranges(config)
  if config.sample.method not in diffusion.SAMPLERS:
    raise ValueError(f"config.sample.method={config.sample.method!r}: use one of "
                     f"{diffusion.SAMPLERS}.")
  _check_prune(config.prune, config.train.steps)
  try:
    data_lib.check_config(config.data)
  except ValueError as e:  # e.g. TFDS's own name parsing, which does not name the field
    if "config.data" in str(e):
      raise
    raise ValueError(f"config.data does not work ({str(e).splitlines()[0]}); check "
                     f"config.data.name={config.data.name!r} and its settings.") from e
  diffusion.schedule_from_config(config.diffusion)
  # the architecture checks (divisibility, per-block lists) before any data loads
  dit.arch_from_config(config.model, config.data.image_size, config.data.channels, 0)


def finalize(config):
  """A copy with per-block widths spelled out: config.model.heads/mlp become tuples."""
  config = ml_collections.ConfigDict(config.to_dict())
  _check_raw(config)
  hidden, depth, heads, _ = dit.parse_variant(config.model.variant)
  m = config.model
  m.hidden = m.hidden or hidden
  m.depth = m.depth or (len(m.heads) if m.heads else depth)
  if not m.heads:
    m.heads = (heads,) * m.depth
  elif isinstance(m.heads, int):
    m.heads = (m.heads,) * m.depth
  if not m.mlp:
    m.mlp = (int(m.hidden * m.mlp_ratio),) * m.depth
  elif isinstance(m.mlp, int):
    m.mlp = (m.mlp,) * m.depth
  m.heads, m.mlp = tuple(m.heads), tuple(m.mlp)
  p = config.prune
  if p.at_step >= 0 and p.finetune_steps > 0:
    config.train.steps = p.at_step + p.finetune_steps
  return config


def make_runlocal(config):
  """The seconds-long test mode every config shares: a 2-block, 64-wide model."""
  config.data.n_heldout = 32
  config.model.hidden, config.model.depth = 64, 2
  config.model.dtype = "float32"
  config.train.steps = 20
  config.train.batch_size = 8
  config.train.warmup_steps = 5
  config.log_every = 5
  config.checkpoint.every = 10
  config.memo.every, config.memo.probe, config.memo.buckets = 10, 8, 4
  config.eval.num, config.eval.at_end, config.eval.feature_steps = 32, False, 50
  config.prune.eval_before = False
  config.sample.every = 0
  config.sample.num = 8
  config.sample.steps = 5
  return config


def _check_prune(p, steps):
  from dit_jax import pruning  # here, not at the top: pruning -> state -> configlib
  if p.at_step < 0:
    return
  if p.at_step > steps:
    raise ValueError(f"config.prune.at_step={p.at_step} is after the last step {steps}; "
                     "raise config.train.steps, or set config.prune.at_step=-1 to train "
                     "without pruning.")
  if p.method not in pruning.METHODS:
    raise ValueError(f"config.prune.method={p.method!r}: use one of {pruning.METHODS}.")
  if p.target not in ("ratio", "capacity"):
    raise ValueError(f"config.prune.target={p.target!r}: use 'ratio' or 'capacity'.")
  for field in ("ratio", "mlp_ratio"):
    if not 0 <= p[field] < 1:
      raise ValueError(f"config.prune.{field}={p[field]!r} must be in [0, 1).")
  if len(p.t_beta) != 2 or not all(b > 0 for b in p.t_beta):
    raise ValueError(f"config.prune.t_beta={p.t_beta!r} must be two positive numbers (a, b).")
  for field in ("batches", "batch_size", "min_heads", "mlp_multiple", "capacity_steps",
                "capacity_probe"):
    _positive_int(p[field], f"prune.{field}")
