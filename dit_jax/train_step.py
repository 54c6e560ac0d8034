"""The jitted train step and the batch stream: what the loop and the pruner run.
"""
import jax
import jax.numpy as jnp
import optax

from dit_jax import data as data_lib
from dit_jax import diffusion
from dit_jax import sharding
from dit_jax import state as state_lib


class NonFiniteLossError(FloatingPointError):
  """The loss went NaN or inf; the run stopped and kept its last good checkpoint."""


def _loss_and_grads(setup, config, params, x, y, t, noise):
  """Mean denoising loss of a batch at the given times and noise, and its gradient."""
  def loss_fn(p):
    return diffusion.per_example_loss(state_lib.make_eps_fn(setup, p, y), setup.sched, x, t,
                                      noise, config.diffusion.weighting).mean()
  return jax.value_and_grad(loss_fn)(params)


def _accumulated(setup, config, params, x, y, t, noise, k):
  """The loss and gradient of the whole batch as the mean over k micro-batches.

  Micro-batch j takes rows j, j + k, j + 2k, ...: rows are split over the devices
  in contiguous runs, so each micro-batch still spans every device. The times and
  noise were drawn for the whole batch first, so the result equals one big step's
  up to the order of summation.
  """
  micro = lambda a: None if a is None else jnp.swapaxes(
      a.reshape(a.shape[0] // k, k, *a.shape[1:]), 0, 1)

  def body(carry, mb):
    loss, grads = _loss_and_grads(setup, config, params, *mb)
    return jax.tree.map(jnp.add, carry, (loss, grads)), None
  zero = (jnp.zeros(()), jax.tree.map(jnp.zeros_like, params))
  (loss, grads), _ = jax.lax.scan(body, zero, (micro(x), micro(y), micro(t), micro(noise)))
  return loss / k, jax.tree.map(lambda g: g / k, grads)


def train_step(setup, config, state, batch, masks=None):
  """One optimizer step; with params-shaped `masks` (pruning.unit_masks), a masked one.

  The masked step zeroes the removed units' gradient before the update and their
  weights after it: they stay at zero whatever the optimizer state holds for them
  (pruning.apply_masks zeroes that too).
  """
  key = jax.random.fold_in(state["rng"], state["step"])
  k_drop, k_loss = jax.random.split(key)
  y = batch.get("y")
  if y is not None and setup.arch.num_classes:  # label dropout for guidance
    drop = jax.random.bernoulli(k_drop, config.model.class_dropout, y.shape)
    y = jnp.where(drop, setup.arch.num_classes, y)
  elif not setup.arch.num_classes:
    y = None
  x = batch["x"]
  kt, kn = jax.random.split(k_loss)  # times and noise for the whole batch
  t = setup.sched.sample_t(kt, x.shape[:1])
  noise = jax.random.normal(kn, x.shape, x.dtype)
  k = config.train.grad_accum
  if k == 1:
    loss, grads = _loss_and_grads(setup, config, state["params"], x, y, t, noise)
  else:
    loss, grads = _accumulated(setup, config, state["params"], x, y, t, noise, k)
  if masks is not None:
    grads = jax.tree.map(jnp.multiply, grads, masks)
  updates, opt_state = setup.tx.update(grads, state["opt_state"], state["params"])
  params = optax.apply_updates(state["params"], updates)
  if masks is not None:
    params = jax.tree.map(jnp.multiply, params, masks)
  d = ema_decay(config, state["step"])
  ema = jax.tree.map(lambda e, p: d * e + (1 - d) * p, state["ema"], params)
  new_state = dict(state, params=params, ema=ema, opt_state=opt_state,
                   step=state["step"] + 1)
  metrics = {"train/loss": loss, "train/grad_norm": optax.tree.norm(grads),
             "train/param_norm": optax.tree.norm(params)}
  return new_state, metrics


def ema_decay(config, step):
  """config.train.ema_decay, restarted at a prune (config.prune.ema_restart).

  The EMA sliced at the prune averages weights tuned for the unpruned model; at
  0.999 it would still give them weight 0.61 after 500 fine-tuning steps, so the
  evaluated model would be mostly the pruned model before any fine-tuning. From
  the prune on the decay is min(d, k / (k + 1)), k the steps since the prune:
  the EMA becomes the running mean of the fine-tuned weights until that mean is
  as long as d's horizon.
  """
  d = config.train.ema_decay
  at = config.prune.at_step
  if at < 0 or not config.prune.ema_restart:
    return d
  k = jnp.asarray(step, jnp.float32) - at
  return jnp.where(k >= 0, jnp.minimum(d, k / (k + 1.0)), d)


def jit_train_step(setup, config, state_sh, mesh, masks_sh=None):
  """The jitted step; given the masks' shardings, a masked one that takes the masks third."""
  in_sh = (state_sh, sharding.batch_sharding(mesh)) + (() if masks_sh is None else (masks_sh,))
  return jax.jit(lambda s, b, *masks: train_step(setup, config, s, b, *masks),
                 in_shardings=in_sh,
                 out_shardings=(state_sh, sharding.replicated(mesh)),
                 donate_argnums=0)


def get_batch(dataset, seed, step, batch_size, mesh, labels=False):
  """The rows of the global batch of `step` that this process's devices hold.

  The global batch is a pure function of (seed, step), so every process agrees
  on it without talking, and a resumed run replays it; each process reads only
  its own rows (from disk, for a training split held as data.DiskRows).
  """
  idx = data_lib.batch_indices(seed, step, len(dataset.train_x), batch_size)
  idx = idx[sharding.process_slice(mesh, batch_size)]
  batch = {"x": dataset.train_x[idx]}
  if labels:
    batch["y"] = dataset.train_y[idx].astype(jnp.int32)
  return batch


def run_steps(setup, config, mesh, state, dataset, start, num, masks=None):
  """`num` training steps from `start` on a copy of `state` (used to probe candidates).

  With `masks`, masked steps: give it a state from pruning.apply_masks.
  """
  state_sh = sharding.shardings_of(state, mesh)
  state = jax.device_put(jax.tree.map(jnp.copy, state), state_sh)
  if masks is None:
    step_fn = jit_train_step(setup, config, state_sh, mesh)
  else:
    masks_sh = sharding.shardings_of(masks, mesh)
    masked = jit_train_step(setup, config, state_sh, mesh, masks_sh)
    masks = jax.device_put(masks, masks_sh)
    step_fn = lambda s, b: masked(s, b, masks)
  for step in range(start, start + num):
    batch = get_batch(dataset, config.seed, step, config.train.batch_size, mesh,
                      labels=bool(setup.arch.num_classes))
    state, _ = step_fn(state, sharding.put_batch(batch, mesh))
  return state


def distill_step(setup, config, state, draw_x0, target_eps):
  """One optimizer step that regresses the model onto a known score (no data read).

  draw_x0(key, batch) gives clean points from the density and target_eps(x_t, t)
  its eps-prediction; the loss is the denoising loss with target_eps in place of
  the noise, whose minimiser is the true score itself, so no width can memorize.
  """
  key = jax.random.fold_in(state["rng"], state["step"])
  kx, kt, kn = jax.random.split(key, 3)
  x0 = draw_x0(kx, config.train.batch_size)
  t = setup.sched.sample_t(kt, x0.shape[:1])
  a, s = setup.sched.alpha_sigma(t)
  x_t = a[:, None, None, None] * x0 + s[:, None, None, None] * jax.random.normal(kn, x0.shape)
  target = target_eps(x_t, t)

  def loss_fn(p):
    err = jnp.mean(jnp.square(state_lib.make_eps_fn(setup, p)(x_t, t) - target), (1, 2, 3))
    return (err / jnp.square(s) if config.diffusion.weighting == "score" else err).mean()
  grads = jax.grad(loss_fn)(state["params"])
  updates, opt_state = setup.tx.update(grads, state["opt_state"], state["params"])
  return dict(state, params=optax.apply_updates(state["params"], updates), opt_state=opt_state,
              step=state["step"] + 1)


def run_distill_steps(setup, config, mesh, state, num, draw_x0, target_eps):
  """`num` distill_steps on a copy of `state` (capacity candidates)."""
  state_sh = sharding.shardings_of(state, mesh)
  step_fn = jax.jit(lambda s: distill_step(setup, config, s, draw_x0, target_eps),
                    in_shardings=(state_sh,), out_shardings=state_sh, donate_argnums=0)
  state = jax.device_put(jax.tree.map(jnp.copy, state), state_sh)
  for _ in range(num):
    state = step_fn(state)
  return state
