"""The model-state kit: optimizer, train state, the model as an eps function.

A `Setup` is what the jitted functions close over; it is rebuilt when pruning
changes the architecture.
"""
import dataclasses

import jax
import jax.numpy as jnp
import optax

from dit_jax import diffusion
from dit_jax import sharding
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
  dit.check_embedding(config.model)
  graphdef, _ = dit.abstract_model(arch, dit.resolve_fence(config.model.fence),
                                   config.train.remat, config.model.time_scale,
                                   config.model.pos_order)
  return Setup(arch, graphdef, diffusion.schedule_from_config(config.diffusion),
               make_optimizer(config.train, config.train.steps))


def init_state(setup, key):
  params = dit.init_params(setup.arch, jax.random.fold_in(key, 0))
  return {"params": params,
          "ema": jax.tree.map(jnp.copy, params),
          "opt_state": setup.tx.init(params),
          "step": jnp.zeros((), jnp.int32),
          "rng": jax.random.fold_in(key, 1)}


def abstract_state(setup, mesh, key=None):
  """The train state's shapes, dtypes and shardings (on `mesh`), without allocating it."""
  key = jax.random.PRNGKey(0) if key is None else key
  abstract = jax.eval_shape(lambda k: init_state(setup, k), key)
  return with_shardings(abstract, sharding.state_shardings(abstract, mesh))


def with_shardings(abstract, shardings):
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      abstract, shardings)


def make_eps_fn(setup, params, y=None):
  """eps_hat(x_t, t) in schedule time, for losses and samplers."""
  return lambda x, t: dit.apply(setup.graphdef, params, x, setup.sched.net_time(t), y)
