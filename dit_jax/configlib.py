"""The config layer: the base config, config-file arguments, overrides, field checks.

It imports nothing but ml_collections, so loading a config file is cheap; the
modules that own a section check it (data, diffusion, models.dit, pruning) and
dit_jax.config_check calls them.
"""
import importlib.util
import json
import logging
import os

import ml_collections
from ml_collections.config_dict import placeholder


class ConfigError(ValueError):
  """Bad input from the user: a config field, a dataset, a workdir. The message
  names the field and the fix; the command-line tools print it without a traceback."""


def check_int(value, field, low=1):
  """config.<field> must be an integer >= low (bools are not integers here)."""
  if isinstance(value, bool) or not isinstance(value, int) or value < low:
    kind = "a positive integer" if low == 1 else f"an integer >= {low}"
    raise ConfigError(f"config.{field} must be {kind}, got {value!r}.")


def check_choice(value, field, choices):
  if value not in choices:
    raise ConfigError(f"config.{field}={value!r}: use one of {tuple(choices)}.")


def parse_arg(arg, **defaults):
  """'runlocal,n=64,variant=S/2' -> ConfigDict(runlocal=True, n=64, variant='S/2').

  Each key must appear in `defaults`, whose values fix the type.
  """
  out = ml_collections.ConfigDict(dict(defaults, runlocal=False))
  for item in filter(None, (arg or "").split(",")):
    key, eq, value = item.partition("=")
    if key not in out:
      raise ConfigError(f"config argument {key!r} unknown; known: {sorted(out)}")
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


def load_spec(text):
  """(path, get_config(arg)) of `path.py[:arg]`, the form every --config flag takes."""
  path, _, arg = text.partition(":")
  return path, load_config_file(path).get_config(arg or None)


def read_json_config(file, fix="restore it, or use a new workdir."):
  """A config.json (a workdir's resolved config) on top of the base config: a field
  added since it was written takes its default, one removed since is ignored. A torn
  or hand-broken file is a ConfigError naming it, with `fix`."""
  with open(file, encoding="utf-8") as f:
    text = f.read()
  try:
    stored = json.loads(text)
  except json.JSONDecodeError as e:
    raise ConfigError(f"{file} is not valid JSON ({e.msg} at line {e.lineno}, column "
                      f"{e.colno}): {fix}") from None
  config = base_config()
  _merge(config, stored, "config")
  return config


def _merge(node, stored, name):
  for key, value in stored.items():
    if key not in node:
      logging.getLogger("dit_jax").warning(
          "%s.%s in config.json is not a config field (any more); ignored", name, key)
    elif isinstance(node[key], ml_collections.ConfigDict) and isinstance(value, dict):
      _merge(node[key], value, f"{name}.{key}")
    else:
      node[key] = tuple(value) if isinstance(value, list) else value


# the experiment config a sweep builds on, per dataset (files in configs/)
SWEEP_BASES = {"digits": "default.py", "gmm": "gmm.py"}


def sweep_base(sweep_file, data, arg=None):
  """get_config(arg) of the experiment config that a sweep file in configs/sweeps/ builds
  on for `data` (configs/default.py for digits, configs/gmm.py for gmm)."""
  if data not in SWEEP_BASES:
    raise ConfigError(f"sweep argument data={data!r}: use one of {sorted(SWEEP_BASES)}.")
  configs = os.path.dirname(os.path.dirname(os.path.abspath(sweep_file)))
  return load_config_file(os.path.join(configs, SWEEP_BASES[data])).get_config(arg)


def get_field(config, field):
  """config.a.b for field "a.b"; None where a part is missing."""
  for part in field.split("."):
    config = config.get(part) if config is not None else None
  return config


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
  """Every field a run reads, with its default: the one source of defaults.

  Experiment configs (configs/*.py) override what differs; code reads config.x
  and never supplies a default of its own.
  """
  c = ml_collections.ConfigDict()
  c.seed = 0  # the run's seed: training subset, init, batches, noise, samples
  # > 1: seeds seed .. seed + seeds - 1 trained together in one program, each in
  # WORKDIR/seed_<s> as its own single-seed run (dit_jax.seeds)
  c.seeds = 1

  c.data = ml_collections.ConfigDict()
  c.data.name = "digits"  # digits | crops | gmm | npz:PATH | folder:PATH | a prepared TFDS name
  c.data.n_train = 32  # images the model trains on (a seeded subset)
  c.data.n_select = 512  # images that choose: importance, capacity search, tracker probe
  c.data.n_test = 1000  # images that judge: quality references and the feature net
  c.data.image_size = 8  # side in pixels; sources are resized to it
  c.data.channels = 1  # image channels (gmm: d = image_size^2 * channels)
  c.data.data_dir = placeholder(str)  # TFDS data dir; None: TFDS's default
  c.data.conditional = False  # train with class labels (and label dropout)
  c.data.max_memory_mb = 1024  # a training split larger than this is read from disk per batch
  c.data.vae = ""  # latent runs: a diffusers AutoencoderKL .safetensors; "": pixel space
  c.data.latent_dir = "~/.cache/dit_jax/latents"  # latent runs: the encoded splits' cache
  c.data.gmm = ml_collections.ConfigDict()
  c.data.gmm.k = 8  # mixture components
  c.data.gmm.scale = 2.0  # mu_k ~ N(0, scale^2 I)
  c.data.gmm.cov_scale = 1.0  # Sigma = cov_scale^2 I unless cov_diag is given
  c.data.gmm.cov_diag = placeholder(tuple)  # the d variances of a diagonal Sigma
  c.data.gmm.weights = ()  # the K component weights (summing to 1); (): uniform
  c.data.gmm.size = 20000  # samples drawn once into the dataset
  c.data.gmm.data_seed = 0  # seed of the means and the samples

  c.model = ml_collections.ConfigDict()
  c.model.variant = "tiny/2"  # NAME/PATCH, NAME in tiny, S, B, L, XL
  c.model.hidden = 0  # token width; 0: the variant's
  c.model.depth = 0  # blocks; 0: the variant's (or len(heads))
  c.model.heads = ()  # heads per block (an int or a tuple); (): the variant's
  c.model.head_dim = 0  # width of one head; 0: hidden // max(heads)
  c.model.mlp = ()  # MLP hidden units per block (an int or a tuple); (): hidden * mlp_ratio
  c.model.mlp_ratio = 4.0  # MLP width / hidden when mlp is not given
  c.model.dtype = "float32"  # compute dtype (float32 | bfloat16); parameters stay float32
  c.model.class_dropout = 0.1  # label dropout for classifier-free guidance
  c.model.fence = "auto"  # CPU cotangent fence (dit._cotangent_fence): auto (CPU only) | on | off
  c.model.time_scale = 1000.0  # timestep features read network time (in [0, 1]) x this
  c.model.pos_order = "row_col"  # position embedding's first channel half: row_col | col_row

  c.diffusion = ml_collections.ConfigDict()
  c.diffusion.schedule = "ddpm_linear"  # ddpm_linear | ddpm_cosine | vp (the paper's OU)
  c.diffusion.num_steps = 1000  # discrete schedules: number of noise levels
  c.diffusion.t0 = 1e-3  # vp: smallest time
  c.diffusion.t_max = 10.0  # vp: largest time (a_T = e^-5)
  c.diffusion.weighting = "eps"  # eps (DiT's MSE) | score (the paper's 1/s_t^2)

  c.train = ml_collections.ConfigDict()
  c.train.steps = 6000  # optimizer steps in all (a prune's fine-tuning included)
  c.train.batch_size = 32  # global batch, split over devices
  c.train.lr = 1e-3  # AdamW peak learning rate
  c.train.warmup_steps = 200  # linear warm-up from 0
  c.train.lr_schedule = "constant"  # constant | cosine (decays to 0 at train.steps)
  c.train.weight_decay = 0.0  # AdamW decoupled decay on matrices
  c.train.b1 = 0.9  # Adam first-moment decay
  c.train.b2 = 0.999  # Adam second-moment decay
  c.train.grad_clip = 1.0  # global-norm clipping; 0: none
  c.train.ema_decay = 0.999  # EMA of the weights, which evaluation samples

  c.train.grad_accum = 1  # micro-batches per step (batch_size is the global batch)
  c.train.remat = False  # recompute each block's activations in the backward pass
  c.train.peak_flops = 0.0  # per-device peak FLOP/s for train/mfu; 0: known or measured

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1  # devices on the data axis; -1: all that fsdp leaves
  c.mesh.fsdp = 1  # devices that split parameters and optimizer state (FSDP); -1: the rest

  c.log_every = 100  # steps between metrics.jsonl rows

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every = 1000  # steps between checkpoints (plus the last step)
  c.checkpoint.keep = 3  # newest checkpoints kept

  c.sample = ml_collections.ConfigDict()
  c.sample.every = 2000  # steps between sample grids in samples/; 0: none
  c.sample.num = 64  # images in a grid
  c.sample.method = "ddim"  # ddim | ddpm | heun
  c.sample.steps = 50  # sampler steps
  c.sample.guidance = 1.0  # classifier-free guidance weight (conditional runs)

  c.memo = ml_collections.ConfigDict()
  c.memo.every = 250  # steps between gap-tracker calls; 0: none
  c.memo.probe = 32  # images in each of the train and select probes
  c.memo.buckets = 8  # equal slices of the noise schedule, small t first
  # stop training at the first tracker call whose reading (memorization.stop_reading:
  # memo_ema/index on a known density, else memo_ema/gap / memo_ema/heldout_loss)
  # reaches this, then evaluate as at the end; 0: train all train.steps
  c.memo.stop_at = 0.0

  c.eval = ml_collections.ConfigDict()
  c.eval.num = 1000  # samples per evaluation (mem_ratio, quality)
  c.eval.at_end = True  # evaluate the final EMA weights into eval.json
  c.eval.at_steps = ()  # more steps to evaluate at during the run (eval.json "by_step")
  c.eval.feature_steps = 500  # training steps of the feature net (on the test split)
  c.eval.fid = "auto"  # Inception FID vs the test split: auto (3-channel images) | on | off
  # the converted Inception weights (python scripts/convert_fid_weights.py writes them);
  # reference statistics are cached beside them in fid_stats/
  c.eval.fid_weights = "~/.cache/dit_jax/fid_inception_v3.npz"
  c.eval.fid_batch = 50  # images per Inception call (~11 GFLOP each at 299x299)
  # the model's own likelihood (test_nll, train_nll, nll_gap) through the probability-flow
  # ODE, on up to this many points of the test split and of the training set; 0: off
  c.eval.nll_num = 1000
  c.eval.nll_solver = "tsit5"  # diffrax solver: tsit5 | dopri5 | heun
  c.eval.nll_rtol = 1e-3  # adaptive step tolerance (relative and absolute)
  c.eval.nll_steps = 0  # > 0: that many fixed steps instead of adaptive ones
  c.eval.nll_divergence = "hutchinson"  # hutchinson (one Rademacher probe) | exact (D JVPs)

  c.prune = ml_collections.ConfigDict()
  c.prune.at_step = -1  # step to prune at; < 0: no pruning
  c.prune.finetune_steps = 0  # fine-tuning steps the run must reach: train.steps >= at_step + this
  # importance: select_taylor (held-out Taylor) | head_grad (the paper's Algorithm 2) |
  # magnitude | random | contrast | specific; docs/PRUNING.md says why select_taylor
  c.prune.method = "select_taylor"
  c.prune.target = "ratio"  # ratio (cut ratio / mlp_ratio) | capacity (search the cut)
  c.prune.ratio = 0.2  # fraction of all attention heads removed
  c.prune.mlp_ratio = 0.0  # fraction of all MLP units removed
  c.prune.min_heads = 1  # heads every block keeps
  c.prune.mlp_multiple = 8  # every block keeps a multiple of this many MLP units
  c.prune.use_ema = False  # score the EMA weights instead of the raw ones
  c.prune.mask_seed = -1  # >= 0: the importance draw's own seed (random's mask); -1: from seed and step
  # >= 0: the fine-tuning after the prune draws its batches and noise from this seed
  # (reruns of one mask with other fine-tuning noise); -1: the run's own streams go on
  c.prune.finetune_seed = -1
  c.prune.batches = 16  # batches of mask gradients per importance estimate
  c.prune.batch_size = 64  # images per importance batch
  c.prune.t_beta = (0.8, 2.0)  # importance times: t / T ~ Beta(a, b), small t favoured
  c.prune.specific_draws = 8  # specific: noisings per image
  c.prune.specific_select = 256  # specific: select images that give the reference spread
  c.prune.ema_restart = True  # the EMA restarts as a running mean at the prune
  c.prune.eval_before = True  # evaluate the model just before the prune
  c.prune.control = False  # also fine-tune the unpruned model equally (WORKDIR/control)
  c.prune.tolerance = 0.05  # capacity: allowed relative rise of the held-out loss
  # capacity: cuts tried, heads then MLP units (the capacity grid's widths 3/4 ... 1/8)
  c.prune.capacity_ratios = (0.25, 0.5, 0.75, 0.875)
  c.prune.capacity_fit = "auto"  # gt | train_gt | select | train | auto (gt: known density)
  c.prune.capacity_steps = 300  # capacity: fine-tuning steps per candidate
  c.prune.capacity_probe = 256  # capacity: probe points (select split, or density draws)
  return c


def make_runlocal(config):
  """The seconds-long test mode every config shares: a 2-block, 64-wide model."""
  config.data.n_select, config.data.n_test = 32, 32
  config.model.hidden, config.model.depth = 64, 2
  config.model.dtype = "float32"
  config.train.steps = 20
  config.train.batch_size = 8
  config.train.warmup_steps = 5
  config.log_every = 5
  config.checkpoint.every = 10
  config.memo.every, config.memo.probe, config.memo.buckets = 10, 8, 4
  config.eval.num, config.eval.at_end, config.eval.feature_steps = 32, False, 50
  config.eval.nll_num = 0  # the likelihood ODE compiles for ~10 s: tests that read it turn it on
  config.prune.eval_before = False
  config.sample.every = 0
  config.sample.num = 8
  config.sample.steps = 5
  return config


