"""What a run is made of, apart from the loop: optimizer, state, model calls, loading.

Shared by training, evaluation, pruning and the command-line tools.
"""
import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import optax

from dit_jax import checkpointing
from dit_jax import configlib
from dit_jax import diffusion
from dit_jax import report
from dit_jax.models import dit


def lr_schedule(tcfg, total_steps):
  warmup = min(int(tcfg.warmup_steps), max(total_steps - 1, 0))
  if tcfg.lr_schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(
        0.0, tcfg.lr, warmup_steps=warmup, decay_steps=max(total_steps, warmup + 1))
  return optax.join_schedules(
      [optax.linear_schedule(0.0, tcfg.lr, max(warmup, 1)), optax.constant_schedule(tcfg.lr)],
      [warmup])


def _decay_mask(params):
  """Weight decay on matrices only: not on biases, norms or embeddings."""
  def keep(path, x):
    name = "/".join(str(getattr(k, "key", k)) for k in path)
    return x.ndim >= 2 and "embed" not in name
  return jax.tree_util.tree_map_with_path(keep, params)


def make_optimizer(tcfg, total_steps):
  tx = optax.adamw(lr_schedule(tcfg, total_steps), b1=tcfg.b1, b2=tcfg.b2,
                   weight_decay=tcfg.weight_decay, mask=_decay_mask)
  if tcfg.grad_clip and tcfg.grad_clip > 0:
    tx = optax.chain(optax.clip_by_global_norm(tcfg.grad_clip), tx)
  return tx


@dataclasses.dataclass(frozen=True)
class Setup:
  """What the step functions close over; rebuilt when the architecture changes."""
  arch: dit.Arch
  graphdef: object
  sched: diffusion.Schedule
  tx: optax.GradientTransformation


def make_setup(config, arch):
  graphdef, _ = dit.abstract_model(arch)
  return Setup(arch, graphdef, diffusion.schedule_from_config(config.diffusion),
               make_optimizer(config.train, config.train.steps))


def init_state(setup, key):
  params = dit.init_params(setup.arch, jax.random.fold_in(key, 0))
  return {"params": params,
          "ema": jax.tree.map(jnp.copy, params),
          "opt_state": setup.tx.init(params),
          "step": jnp.zeros((), jnp.int32),
          "rng": jax.random.fold_in(key, 1)}


def make_eps_fn(setup, params, y=None):
  """eps_hat(x_t, t) in schedule time, for losses and samplers."""
  return lambda x, t: dit.apply(setup.graphdef, params, x, setup.sched.net_time(t), y)


def make_sampler(setup, scfg, num, value_range):
  """Jitted (params, key) -> num samples; random labels when conditional."""
  arch = setup.arch
  shape = (num, arch.image_size, arch.image_size, arch.channels)

  def run(params, key):
    ky, ks = jax.random.split(key)
    if arch.num_classes:
      y = jax.random.randint(ky, (num,), 0, arch.num_classes)
      cond, uncond = make_eps_fn(setup, params, y), make_eps_fn(setup, params)
      w = scfg.guidance
      eps_fn = lambda x, t: uncond(x, t) + w * (cond(x, t) - uncond(x, t))
    else:
      eps_fn = make_eps_fn(setup, params)
    return diffusion.sample(eps_fn, setup.sched, ks, shape, method=scfg.method,
                            steps=scfg.steps, clip=value_range)
  return jax.jit(run)




def load_workdir(workdir, step=None):
  """(config, setup, state, meta) of a checkpoint in `workdir`, for inference tools."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: is {workdir!r} a training workdir?")
  with open(path, encoding="utf-8") as f:
    config = configlib.finalize(ml_collections.ConfigDict(json.load(f)))
  ckpt = checkpointing.Checkpointer(os.path.abspath(os.path.join(workdir, "checkpoints")),
                                    config.checkpoint.keep, async_save=False)
  step = ckpt.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"no checkpoint in {workdir}/checkpoints yet.")
  meta = ckpt.restore_meta(step)
  setup = make_setup(config, dit.Arch.from_json(meta["arch"]))
  abstract = jax.eval_shape(lambda k: init_state(setup, k), jax.random.PRNGKey(0))
  state, meta = ckpt.restore(abstract, step)
  ckpt.close()
  return config, setup, state, meta


def sample_to_png(workdir, path, num=64, seed=0, method=None, steps=None, guidance=None):
  """Samples the EMA weights of the newest checkpoint into a grid PNG; returns the step."""
  config, setup, state, meta = load_workdir(workdir)
  scfg = ml_collections.ConfigDict(config.sample.to_dict())
  scfg.method = method or scfg.method
  scfg.steps = steps or scfg.steps
  scfg.guidance = scfg.guidance if guidance is None else guidance
  value_range = meta.get("value_range")
  x = make_sampler(setup, scfg, num, value_range)(state["ema"], jax.random.PRNGKey(seed))
  report.save_grid(jax.device_get(x), path, value_range)
  return meta["step"]
