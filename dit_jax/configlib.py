"""Config helpers: string arguments of get_config, the shared base config, checks."""
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


def base_config():
  """Fields every config shares; experiment configs override what differs."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.data = dict(name="digits", n_train=32, n_heldout=256, image_size=8,
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
  c.memo = dict(every=0)
  c.prune = dict(at_step=-1, ratio=0.2, mlp_ratio=0.0, method="head_grad",
                 finetune_steps=0)
  return c


def _positive_int(value, field):
  if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
    raise ValueError(f"config.{field} must be a positive integer, got {value!r}.")


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
  if config.sample.method not in diffusion.SAMPLERS:
    raise ValueError(f"config.sample.method={config.sample.method!r}: use one of "
                     f"{diffusion.SAMPLERS}.")
  data_lib.check_config(config.data)
  diffusion.schedule_from_config(config.diffusion)
  # the architecture checks (divisibility, per-block lists) before any data loads
  dit.arch_from_config(config.model, config.data.image_size, config.data.channels, 0)


def finalize(config):
  """A copy with per-block widths spelled out: config.model.heads/mlp become tuples."""
  config = ml_collections.ConfigDict(config.to_dict())
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
  config.sample.every = 0
  config.sample.num = 8
  config.sample.steps = 5
  return config
