"""Drawing samples from a model: the jitted sampler, batched draws, sample grids."""
import time

import jax
import ml_collections
import numpy as np

from dit_jax import diffusion
from dit_jax import latents
from dit_jax import report
from dit_jax import sharding
from dit_jax import state as state_lib
from dit_jax import workdir as workdir_lib


def _labeled_sample_fn(setup, scfg, num, value_range, out):
  """(params, key, labels or None) -> num samples, guided by scfg.guidance when conditional."""
  arch = setup.arch
  shape = (num, arch.image_size, arch.image_size, arch.channels)

  def run(params, key, y):
    if arch.num_classes:
      cond, uncond = state_lib.make_eps_fn(setup, params, y), state_lib.make_eps_fn(setup, params)
      w = scfg.guidance
      eps_fn = lambda x, t: uncond(x, t) + w * (cond(x, t) - uncond(x, t))
    else:
      eps_fn = state_lib.make_eps_fn(setup, params)
    return diffusion.sample(eps_fn, setup.sched, key, shape, method=scfg.method,
                            steps=scfg.steps, clip=value_range, out_sharding=out)
  return run


def _batch_out(mesh, num):
  """The batch sharding when the mesh's batch devices divide num, else None."""
  split = mesh is not None and num % sharding.batch_devices(mesh) == 0
  return sharding.batch_sharding(mesh) if split else None


def make_sampler(setup, scfg, num, value_range, mesh=None):
  """Jitted (params, key) -> num samples; random labels when conditional.

  With a mesh whose batch devices divide num, the samples are split over it.
  """
  out = _batch_out(mesh, num)
  run = _labeled_sample_fn(setup, scfg, num, value_range, out)

  def with_random_labels(params, key):
    ky, ks = jax.random.split(key)
    k = setup.arch.num_classes
    return run(params, ks, jax.random.randint(ky, (num,), 0, k) if k else None)
  return jax.jit(with_random_labels, out_shardings=out)


def make_labeled_sampler(setup, scfg, num, value_range, mesh=None):
  """Jitted (params, key, labels) -> num samples (labels None for unconditional models)."""
  out = _batch_out(mesh, num)
  return jax.jit(_labeled_sample_fn(setup, scfg, num, value_range, out), out_shardings=out)


def draw_samples(setup, scfg, params, num, seed, value_range, batch=256, mesh=None):
  """`num` samples in fixed-size jitted batches split over the mesh's devices; returns
  (samples on every process's host, images/s)."""
  mesh = mesh or sharding.make_mesh()
  batch = sharding.pad_to(min(batch, num), mesh)
  sampler = make_sampler(setup, scfg, batch, value_range, mesh)
  key = jax.random.PRNGKey(seed)
  jax.block_until_ready(sampler(params, key))  # compile outside the timing
  t0, out = time.perf_counter(), []
  for i in range(-(-num // batch)):
    out.append(sharding.gather(sampler(params, jax.random.fold_in(key, i))))
  return np.concatenate(out)[:num], num / (time.perf_counter() - t0)


def sample_config(config, method=None, steps=None, guidance=None):
  """config.sample with the command line's choices on top."""
  scfg = ml_collections.ConfigDict(config.sample.to_dict())
  scfg.method = method or scfg.method
  scfg.steps = steps or scfg.steps
  scfg.guidance = scfg.guidance if guidance is None else guidance
  return scfg


def sample_to_png(workdir, path, num=64, seed=0, method=None, steps=None, guidance=None):
  """Samples the EMA weights of the newest checkpoint into a grid PNG; returns the step."""
  mesh = sharding.make_mesh()
  config, setup, state, meta = workdir_lib.load(workdir, mesh=mesh, keys=("ema",))
  scfg = sample_config(config, method, steps, guidance)
  value_range = meta["value_range"]
  x = make_sampler(setup, scfg, num, value_range, mesh)(state["ema"], jax.random.PRNGKey(seed))
  x = sharding.gather(x)
  if config.data.vae:  # a latent model: the grid shows the decoded images
    x, value_range = latents.decode_file(config.data.vae, x), (-1, 1)
  if workdir_lib.is_writer():
    report.save_grid(x, path, value_range)
  return meta["step"]
