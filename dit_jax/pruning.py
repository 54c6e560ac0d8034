"""Structured pruning: unit importance, physical surgery, and the capacity search.

A unit is an attention head or an MLP hidden unit of one block. Importance
methods (all normalised within each block, then ranked globally):
  head_grad  the paper's Algorithm 2: |dL/dmask| of a mask on every unit's
             output, accumulated over batches with t/T ~ Beta(0.8, 2);
  magnitude  the norm of the unit's weights;
  random     the paper's baseline;
  contrast   memorization-aware: importance on held-out (select) data against
             importance on the training set; units that serve only the training
             points go first;
  specific   per image: units whose importance on single training images stands
             out from its spread over select images go first;
  select_taylor  signed first-order estimate of how much removing the unit raises
             the held-out (select) loss; units whose removal lowers it go first.
Surgery slices the arrays (q, k, v and output rows of a head; fc1 columns and
fc2 rows of an MLP unit) in the parameters, the EMA and the optimizer moments.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from dit_jax import diffusion
from dit_jax import memorization
from dit_jax import state as state_lib
from dit_jax import steps
from dit_jax.models import dit

METHODS = ("head_grad", "magnitude", "random", "contrast", "specific", "select_taylor")
# which axis of each per-block array indexes heads / MLP units
HEAD_AXES = {"qkv_w": 2, "qkv_b": 1, "out_w": 0}
MLP_AXES = {"fc1_w": 1, "fc1_b": 0, "fc2_w": 0}


def _normalize(per_block):
  """I(u) = S(u) / ||S(layer)||_2 (Michel et al. 2019), so layers compare globally."""
  return [s / max(float(np.linalg.norm(s)), 1e-12) for s in per_block]


def mask_gradients(setup, params, x0, key, num_batches, batch_size, beta=(0.8, 2.0),
                   signed=False):
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
  total = jax.tree.map(jnp.zeros_like, masks)
  for i in range(num_batches):
    kb, kl = jax.random.split(jax.random.fold_in(key, i))
    idx = jax.random.randint(kb, (batch_size,), 0, len(x0))
    g = grad_fn(masks, jnp.asarray(x0)[idx], kl)
    total = jax.tree.map(lambda a, b: a + (b if signed else jnp.abs(b)), total, g)
  heads, mlp = jax.device_get(total)
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


def example_gradients(setup, params, x0, key, draws, beta=(0.8, 2.0), batch=64):
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

  x0 = np.asarray(x0)
  pad = -len(x0) % batch
  padded = np.concatenate([x0, np.zeros((pad, *x0.shape[1:]), x0.dtype)])
  parts = []
  for s in range(0, len(padded), batch):
    chunk = jnp.asarray(padded[s:s + batch])
    total = None
    for d in range(draws):
      g = grads(chunk, jax.random.fold_in(key, d))
      total = g if total is None else jax.tree.map(jnp.add, total, g)
    parts.append(jax.device_get(total))
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
  blocks = [params["blocks"][i] for i in range(arch.depth)]
  heads = [np.sqrt(np.sum(np.asarray(b["qkv_w"]) ** 2, axis=(0, 1, 3))
                   + np.sum(np.asarray(b["out_w"]) ** 2, axis=(1, 2))) for b in blocks]
  mlp = [np.linalg.norm(np.asarray(b["fc1_w"]), axis=0)
         * np.linalg.norm(np.asarray(b["fc2_w"]), axis=1) for b in blocks]
  return heads, mlp


def importance(method, setup, params, dataset, pcfg, seed):
  """(head scores, MLP scores) per block, normalised per block; higher = keep."""
  if method not in METHODS:
    raise ValueError(f"config.prune.method={method!r}: use one of {METHODS}.")
  arch = setup.arch
  if method == "random":
    rng = np.random.default_rng(seed)
    return ([rng.random(h) for h in arch.heads], [rng.random(m) for m in arch.mlp])
  if method == "magnitude":
    heads, mlp = magnitudes(arch, params)
    return _normalize(heads), _normalize(mlp)
  if method == "specific":
    return _specific_scores(setup, params, dataset, pcfg, seed)
  key = jax.random.PRNGKey(seed)
  if method == "select_taylor":
    # -dL/dmask on select images: how much removing the unit raises the held-out
    # loss, to first order. Units a memorizing model uses to pull held-out images
    # toward training points lower it when removed (a negative score): they go
    # first. Scores are losses, so they rank across blocks without normalising.
    heads, mlp = mask_gradients(setup, params, dataset.select_x, key, pcfg.batches,
                                pcfg.batch_size, tuple(pcfg.t_beta), signed=True)
    return [-h for h in heads], [-m for m in mlp]
  grads = lambda x: mask_gradients(setup, params, x, key, pcfg.batches, pcfg.batch_size,
                                   tuple(pcfg.get("t_beta", (0.8, 2.0))))
  train_h, train_m = map(_normalize, grads(dataset.train_x))
  if method == "head_grad":
    return train_h, train_m
  held_h, held_m = map(_normalize, grads(dataset.select_x))  # held out: the select split
  # contrast: credit for held-out use, debit for use beyond it on training points
  keep = lambda tr, he: [2 * h - t for t, h in zip(tr, he)]
  return keep(train_h, held_h), keep(train_m, held_m)


def _specific_scores(setup, params, dataset, pcfg, seed):
  """`specific`: units whose importance on individual training images stands out
  from their importance on select images go first; the rest by select importance."""
  key = jax.random.PRNGKey(seed)
  beta = tuple(pcfg.t_beta)
  select = dataset.select_x[:pcfg.specific_select]
  tr_h, tr_m = example_gradients(setup, params, dataset.train_x, key, pcfg.specific_draws, beta)
  se_h, se_m = example_gradients(setup, params, select, jax.random.fold_in(key, 1),
                                 pcfg.specific_draws, beta)
  keep = lambda tr, se: [i - _specificity(t, s) for t, s, i in
                         zip(tr, se, _normalize([s.mean(0) for s in se]))]
  return keep(tr_h, se_h), keep(tr_m, se_m)


def _drop_counts(scores, count, floor, multiple):
  """Units to drop per block: `count` in all (rounded down to `multiple`), by global rank.

  The global ranking decides how many units each block loses; each block's count
  is then rounded to a multiple (largest remainders round up), so that every
  method removes exactly the same number of units: budgets compare equal.
  """
  count -= count % multiple
  order = sorted((float(s), b) for b, blk in enumerate(scores) for s in blk)
  spare = [len(blk) - floor for blk in scores]  # droppable units per block
  want = [0] * len(scores)
  for _, b in order:
    if sum(want) == count:
      break
    if want[b] < spare[b]:
      want[b] += 1
  got = [w - w % multiple for w in want]
  by_remainder = sorted(range(len(scores)), key=lambda b: (-(want[b] % multiple), b))
  for b in by_remainder:
    if sum(got) + multiple > count:
      break
    if got[b] + multiple <= spare[b]:
      got[b] += multiple
  return got


def _keep(scores, drops):
  """Per block, the indices (sorted) left after dropping the `drops[b]` lowest scores."""
  return [np.sort(np.argsort(-np.asarray(s), kind="stable")[:len(s) - d]).astype(np.int32)
          for s, d in zip(scores, drops)]


def plan(scores, ratio_heads, ratio_mlp, min_heads=1, mlp_multiple=8):
  """Per-block kept indices (sorted) for heads and MLP units.

  floor(ratio * total) units go, chosen by the global ranking of `scores`; each
  block keeps at least min_heads heads and a multiple of mlp_multiple MLP units
  (at least one multiple).
  """
  heads, mlp = scores
  n_heads, n_mlp = sum(map(len, heads)), sum(map(len, mlp))
  drop_h = _drop_counts(heads, int(np.floor(ratio_heads * n_heads)), min_heads, 1)
  drop_m = _drop_counts(mlp, int(np.floor(ratio_mlp * n_mlp)), mlp_multiple, mlp_multiple)
  return _keep(heads, drop_h), _keep(mlp, drop_m)


def _slice_tree(tree, keep_h, keep_m):
  """Slices every per-block array found under a 'blocks' key (params, EMA, moments)."""
  def one(path, x):
    keys = [getattr(k, "key", getattr(k, "idx", None)) for k in path]
    if "blocks" not in keys or not hasattr(x, "shape"):
      return x
    pos = keys.index("blocks")
    block, name = keys[pos + 1], keys[-1]
    if name in HEAD_AXES:
      return jnp.take(x, keep_h[block], axis=HEAD_AXES[name])
    if name in MLP_AXES:
      return jnp.take(x, keep_m[block], axis=MLP_AXES[name])
    return x
  return jax.tree_util.tree_map_with_path(one, tree)


def surgery(arch, state, keep_h, keep_m):
  """(new arch, new state): smaller arrays everywhere a parameter shape appears."""
  new_arch = dataclasses.replace(arch, heads=tuple(len(k) for k in keep_h),
                                 mlp=tuple(len(k) for k in keep_m))
  new_state = dict(state)
  for name in ("params", "ema", "opt_state"):
    new_state[name] = _slice_tree(state[name], keep_h, keep_m)
  return new_arch, new_state


def _probe_losses(tracker, setup, params):
  tr, he = jax.jit(lambda p: tracker.losses(state_lib.make_eps_fn(setup, p)))(params)
  return tracker.summarize({"memo": (tr, he)})


# a t-bucket where the held-out loss is within this factor of the training loss is
# one where the unpruned model generalizes rather than memorizes
GENERALIZES = 1.5


def _generalizing_loss(rec, ref):
  """The candidate's and the reference's held-out loss over the generalizing buckets.

  A memorizing model's held-out loss is worst at small t, and pruning improves it
  there; capacity lost for the score itself shows at the t where the unpruned
  model generalizes. The mean over all buckets would hide the second behind the
  first, so the search sums only the buckets where the reference generalizes.
  """
  held, train = ref
  gen = [b for b, (h, t) in enumerate(zip(held, train)) if h <= GENERALIZES * t]
  gen = gen or list(range(len(held)))
  return sum(rec["heldout_t"][b] for b in gen), sum(held[b] for b in gen), gen


def capacity_search(config, setup, state, dataset, mesh, step, scores):
  """Smallest width whose held-out loss stays within tolerance where it generalizes.

  Each candidate (the same ratio of heads and MLP units, by `scores`) is cut from
  the current state and fine-tuned for config.prune.capacity_steps on a copy;
  the unpruned model gets the same fine-tuning. The reference in each t-bucket is
  the unpruned model's held-out loss, or, where the density is known, the larger
  of it and the ground-truth score's loss; candidates are compared on the sum
  over the buckets where the unpruned model generalizes (_generalizing_loss).
  Returns the chosen ratio and the path taken (one record per candidate).
  """
  pcfg = config.prune
  # a larger probe than the tracker's: the differences sought are a few percent
  tracker = memorization.GapTracker(setup.sched, dataset, pcfg.capacity_probe,
                                    config.memo.buckets, config.diffusion.weighting, config.seed)
  buckets = range(config.memo.buckets)

  def measure(ratio, cand_setup, cand_state):
    tuned = steps.run_steps(cand_setup, config, mesh, cand_state, dataset, step,
                            pcfg.capacity_steps)
    m = _probe_losses(tracker, cand_setup, tuned["params"])
    rec = {"ratio": ratio, "num_params": dit.num_params(cand_setup.arch),
           "heads": list(cand_setup.arch.heads), "mlp": list(cand_setup.arch.mlp),
           "heldout_t": [m[f"memo/heldout_loss_t{b}"] for b in buckets],
           "train_t": [m[f"memo/train_loss_t{b}"] for b in buckets]}
    rec.update({k.split("/")[1]: m[k] for k in ("memo/heldout_loss", "memo/train_loss",
                                                "memo/gap_index", "memo/index",
                                                "memo/gt_loss") if k in m})
    if "memo/gt_loss" in m:
      rec["gt_t"] = [m[f"memo/gt_loss_t{b}"] for b in buckets]
    return rec

  path = [measure(0.0, setup, state)]
  held = path[0]["heldout_t"]
  if "gt_t" in path[0]:
    held = [max(r, g) for r, g in zip(held, path[0]["gt_t"])]
  ref = (held, path[0]["train_t"])
  best = 0.0
  for ratio in pcfg.capacity_ratios:
    keep_h, keep_m = plan(scores, ratio, ratio, pcfg.min_heads, pcfg.mlp_multiple)
    arch, cand = surgery(setup.arch, state, keep_h, keep_m)
    rec = measure(ratio, state_lib.make_setup(config, arch), cand)
    cand_loss, ref_loss, rec["buckets"] = _generalizing_loss(rec, ref)
    rec["loss_over_reference"] = cand_loss / max(ref_loss, 1e-12)
    rec["within_tolerance"] = rec["loss_over_reference"] <= 1 + pcfg.tolerance
    path.append(rec)
    if not rec["within_tolerance"]:
      break
    best = ratio
  return best, path


def choose(config, setup, state, dataset, mesh, step):
  """Kept heads and MLP units per block for config.prune at `step`, and a record."""
  pcfg = config.prune
  params = state["ema"] if pcfg.use_ema else state["params"]
  scores = importance(pcfg.method, setup, params, dataset, pcfg, config.seed + step)
  record = {"method": pcfg.method, "target": pcfg.target}
  if pcfg.target == "capacity":
    ratio, record["capacity_path"] = capacity_search(config, setup, state, dataset, mesh,
                                                     step, scores)
    ratios = (ratio, ratio)
  else:
    ratios = (pcfg.ratio, pcfg.mlp_ratio)
  record["ratio"], record["mlp_ratio"] = ratios
  keep_h, keep_m = plan(scores, *ratios, pcfg.min_heads, pcfg.mlp_multiple)
  return keep_h, keep_m, record


def prune(config, setup, state, dataset, mesh, step):
  """(new arch, new state, record): config.prune applied to a train state at `step`."""
  keep_h, keep_m, record = choose(config, setup, state, dataset, mesh, step)
  before = setup.arch
  arch, new_state = surgery(before, state, keep_h, keep_m)
  record.update(step=step, head_dim=arch.head_dim, heads_before=list(before.heads),
                heads=list(arch.heads),
                mlp_before=list(before.mlp), mlp=list(arch.mlp),
                num_params_before=dit.num_params(before), num_params=dit.num_params(arch),
                flops_before=dit.flops_per_image(before), flops=dit.flops_per_image(arch))
  return arch, new_state, record
