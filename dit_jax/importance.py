"""Unit importance: which attention heads and MLP units a prune keeps.

A unit is an attention head or an MLP hidden unit of one block; higher scores
are kept, and scores are ranked globally across blocks. Methods:
  head_grad  the paper's Algorithm 2: |dL/dmask| of a mask on every unit's
             output, accumulated over batches with t/T ~ Beta(0.8, 2), on the
             training set, normalised within each block;
  magnitude  the norm of the unit's weights, normalised within each block;
  random     the paper's baseline;
  contrast   |dL/dmask| on held-out (select) data against the same on the
             training set: 2 I_select - I_train;
  specific   per image: units whose importance on single training images stands
             out from its spread over select images go first;
  select_taylor  signed first-order estimate of how much removing the unit raises
             the held-out (select) loss; units whose removal lowers it go first.
Only the train and select splits are read: data that chooses never judges.
"""
import jax
import jax.numpy as jnp
import numpy as np

from dit_jax import data as data_lib
from dit_jax import diffusion
from dit_jax import sharding
from dit_jax.configlib import ConfigError
from dit_jax.models import dit

METHODS = ("head_grad", "magnitude", "random", "contrast", "specific", "select_taylor")


def _normalize(per_block):
  """I(u) = S(u) / ||S(layer)||_2 (Michel et al. 2019), so layers compare globally."""
  return [s / max(float(np.linalg.norm(s)), 1e-12) for s in per_block]


def mask_gradients(setup, params, x0, key, num_batches, batch_size, beta=(0.8, 2.0),
                   signed=False, mesh=None):
  """Summed |dL/dmask| per head and per MLP unit over `num_batches` batches.

  Times follow t/T ~ Beta(beta), favouring the small t where memorization lives.
  signed=True: the mean dL/dmask itself, whose negative is the first-order
  change of the loss when the unit is removed (Taylor; Molchanov et al. 2017).
  """
  arch = setup.arch
  masks = ([jnp.ones((h,)) for h in arch.heads], [jnp.ones((m,)) for m in arch.mlp])

  def batch_loss(masks, x, k):
    kt, kn = jax.random.split(k)
    t = setup.sched.from_unit(jax.random.beta(kt, *beta, (len(x),)))
    noise = jax.random.normal(kn, x.shape)
    eps_fn = lambda xt, tt: dit.apply(setup.graphdef, params, xt, setup.sched.net_time(tt),
                                      head_masks=masks[0], mlp_masks=masks[1])
    return diffusion.per_example_loss(eps_fn, setup.sched, x, t, noise).mean()

  grad_fn = jax.jit(jax.grad(batch_loss))
  mesh = mesh or sharding.make_mesh()
  total = jax.tree.map(jnp.zeros_like, masks)
  for i in range(num_batches):
    kb, kl = jax.random.split(jax.random.fold_in(key, i))
    idx = np.asarray(jax.random.randint(kb, (batch_size,), 0, len(x0)))
    g = grad_fn(masks, sharding.put_global(x0[idx], mesh), kl)  # the batch over the mesh
    total = jax.tree.map(lambda a, b: a + (b if signed else jnp.abs(b)), total, g)
  heads, mlp = sharding.gather(total)
  scale = 1.0 / num_batches if signed else 1.0
  return [np.asarray(h) * scale for h in heads], [np.asarray(m) * scale for m in mlp]


def example_mask_grads(setup, params, x, t, noise):
  """dL_i/dmask for each example i of the batch, from one backward pass: every
  example gets its own copy of the masks. ([(B, H_b)], [(B, M_b)])."""
  b = len(x)
  masks = ([jnp.ones((b, h)) for h in setup.arch.heads],
           [jnp.ones((b, m)) for m in setup.arch.mlp])

  def total_loss(masks):
    eps_fn = lambda xt, tt: dit.apply(setup.graphdef, params, xt, setup.sched.net_time(tt),
                                      head_masks=masks[0], mlp_masks=masks[1])
    return diffusion.per_example_loss(eps_fn, setup.sched, x, t, noise).sum()
  return jax.grad(total_loss)(masks)


def example_gradients(setup, params, x0, key, draws, beta=(0.8, 2.0), batch=64, mesh=None):
  """Per image, the mean over `draws` noisings of |dL_x/dmask| for every unit.

  One backward pass gives every example's own mask gradient: each example gets
  its own copy of the masks. Returns per-block arrays, heads (N, H_b) and MLP
  units (N, M_b).
  """
  arch = setup.arch

  @jax.jit
  def grads(x, k):
    kt, kn = jax.random.split(k)
    t = setup.sched.from_unit(jax.random.beta(kt, *beta, (len(x),)))
    return jax.tree.map(jnp.abs, example_mask_grads(setup, params, x, t,
                                                    jax.random.normal(kn, x.shape)))

  mesh = mesh or sharding.make_mesh()
  parts = []
  for _, rows in data_lib.chunks(x0, batch):  # x0 may be a training split on disk
    chunk = sharding.put_global(np.concatenate(
        [rows, np.zeros((batch - len(rows), *rows.shape[1:]), rows.dtype)]), mesh)
    total = None
    for d in range(draws):
      g = grads(chunk, jax.random.fold_in(key, d))
      total = g if total is None else jax.tree.map(jnp.add, total, g)
    parts.append(sharding.gather(total))
  heads, mlp = (
      [np.concatenate([p[i][b] for p in parts])[:len(x0)] / draws for b in range(arch.depth)]
      for i in (0, 1))
  return heads, mlp


def _specificity(train, select):
  """Per unit, the mean over training images of how far above the select images'
  spread the unit's importance on that image lies: mean_i max(0, z_i)."""
  mu, sd = select.mean(0), select.std(0) + 1e-12
  return np.maximum((train - mu) / sd, 0.0).mean(0)


def magnitudes(arch, params):
  """Per unit, the norm of its weights; computed where the (possibly sharded)
  parameters live, and only the per-unit norms come to the host."""
  @jax.jit
  def norms(blocks):
    heads = [jnp.sqrt(jnp.sum(b["qkv_w"] ** 2, axis=(0, 1, 3)) + jnp.sum(b["out_w"] ** 2,
                                                                        axis=(1, 2)))
             for b in blocks]
    mlp = [jnp.linalg.norm(b["fc1_w"], axis=0) * jnp.linalg.norm(b["fc2_w"], axis=1)
           for b in blocks]
    return heads, mlp
  return sharding.gather(norms([params["blocks"][i] for i in range(arch.depth)]))


def importance(method, setup, params, dataset, pcfg, seed, mesh=None):
  """(head scores, MLP scores) per block, normalised per block; higher = keep.

  Batches are split over `mesh` (default: every device on the data axis).
  """
  if method not in METHODS:
    raise ConfigError(f"config.prune.method={method!r}: use one of {METHODS}.")
  arch = setup.arch
  if method == "random":
    rng = np.random.default_rng(seed)
    return ([rng.random(h) for h in arch.heads], [rng.random(m) for m in arch.mlp])
  if method == "magnitude":
    heads, mlp = magnitudes(arch, params)
    return _normalize(heads), _normalize(mlp)
  if method == "specific":
    return _specific_scores(setup, params, dataset, pcfg, seed, mesh)
  key = jax.random.PRNGKey(seed)
  if method == "select_taylor":
    # -dL/dmask on select images: how much removing the unit raises the held-out
    # loss, to first order. Units a memorizing model uses to pull held-out images
    # toward training points lower it when removed (a negative score): they go
    # first. Scores are losses, so they rank across blocks without normalising.
    heads, mlp = mask_gradients(setup, params, dataset.select_x, key, pcfg.batches,
                                pcfg.batch_size, tuple(pcfg.t_beta), signed=True, mesh=mesh)
    return [-h for h in heads], [-m for m in mlp]
  grads = lambda x: mask_gradients(setup, params, x, key, pcfg.batches, pcfg.batch_size,
                                   tuple(pcfg.t_beta), mesh=mesh)
  train_h, train_m = map(_normalize, grads(dataset.train_x))
  if method == "head_grad":
    return train_h, train_m
  held_h, held_m = map(_normalize, grads(dataset.select_x))  # held out: the select split
  # contrast: credit for held-out use, debit for use beyond it on training points
  keep = lambda tr, he: [2 * h - t for t, h in zip(tr, he)]
  return keep(train_h, held_h), keep(train_m, held_m)


def _specific_scores(setup, params, dataset, pcfg, seed, mesh):
  """`specific`: units whose importance on individual training images stands out
  from their importance on select images go first; the rest by select importance."""
  key = jax.random.PRNGKey(seed)
  beta = tuple(pcfg.t_beta)
  select = dataset.select_x[:pcfg.specific_select]
  tr_h, tr_m = example_gradients(setup, params, dataset.train_x, key, pcfg.specific_draws,
                                 beta, mesh=mesh)
  se_h, se_m = example_gradients(setup, params, select, jax.random.fold_in(key, 1),
                                 pcfg.specific_draws, beta, mesh=mesh)
  keep = lambda tr, se: [i - _specificity(t, s) for t, s, i in
                         zip(tr, se, _normalize([s.mean(0) for s in se]))]
  return keep(tr_h, se_h), keep(tr_m, se_m)
