"""dit_jax's side of the torch-vs-JAX bench: each row's function as dit_jax runs it.

Training times the step the loop runs (bench/timing.py's TrainSteps: train_step's
jitted step over a sharded state, fence included, donated, one step in flight); forward
a jitted dit.apply; sampling make_sampler's jitted DDIM loop, as evaluation and the
sample hook call it.
"""
import jax
import jax.numpy as jnp
import numpy as np

from bench import timing
from bench.timing import matmul_gflops  # noqa: F401 (stack_worker asks each side for it)
from bench.vs_torch.rows import row_inputs
from dit_jax import config_check, configlib, sampling, sharding, state as state_lib
from dit_jax.models import dit


def config_for(row):
  """The base config with the row's model, image and batch size (no prune, no labels)."""
  c = configlib.base_config()
  c.model.variant = row["variant"]
  c.model.hidden = row.get("hidden", 0)
  c.model.depth = row.get("depth", 0)
  c.data.image_size, c.data.channels = row["image"], row["channels"]
  c.train.batch_size = row["batch"]
  c.sample.method, c.sample.steps = "ddim", row.get("steps", 50)
  return config_check.finalize(c)


def arch_for(row):
  c = config_for(row)
  return dit.arch_from_config(c.model, row["image"], row["channels"], 0)


def num_params(row):
  return dit.num_params(arch_for(row))


def flatten(tree, prefix=""):
  """dit.init_params's nested dict -> {"blocks/0/qkv_w": array}, numpy."""
  out = {}
  items = tree.items() if isinstance(tree, dict) else enumerate(tree)
  for key, value in items:
    path = f"{prefix}{key}"
    if isinstance(value, (dict, list, tuple)):
      out.update(flatten(value, path + "/"))
    else:
      out[path] = np.asarray(value)
  return out


def unflatten(flat):
  """{"blocks/0/qkv_w": array} -> the nested dict dit.init_params returns."""
  out = {}
  for path, value in flat.items():
    node, keys = out, [int(k) if k.isdigit() else k for k in path.split("/")]
    for k in keys[:-1]:
      node = node.setdefault(k, {})
    node[keys[-1]] = jnp.asarray(value)
  return out


def train_runner(row, params):
  steps = timing.TrainSteps(config_for(row), arch_for(row), {"x": row_inputs(row)[0]},
                            sharding.make_mesh(), params=params)
  return steps.step, steps.finish


def forward_runner(row, params):
  graphdef, _ = dit.abstract_model(arch_for(row))
  fwd = jax.jit(lambda p, x, t: dit.apply(graphdef, p, x, t))
  x, t = (jnp.asarray(a) for a in row_inputs(row))
  return lambda: jax.block_until_ready(fwd(params, x, t)), lambda: None


def sample_runner(row, params):
  config = config_for(row)
  setup = state_lib.make_setup(config, arch_for(row))
  sampler = sampling.make_sampler(setup, config.sample, row["batch"], (-1.0, 1.0))
  key = jax.random.PRNGKey(1)
  return lambda: jax.block_until_ready(sampler(params, key)), lambda: None


def runner(row, flat_params):
  """(run the row once, wait for what was run), compiled and run once already.

  Training keeps one step in flight as the loop does; forward and sampling block
  on their result, as a caller reading it would.
  """
  make = {"train": train_runner, "forward": forward_runner, "sample": sample_runner}
  run, finish = make[row["kind"]](row, unflatten(flat_params))
  run()
  finish()
  return run, finish
