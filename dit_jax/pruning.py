"""Structured pruning: physical surgery, the capacity search, pruning a run or a workdir.

Which units go is decided by dit_jax.importance. Surgery slices the arrays (q, k,
v and output rows of a head; fc1 columns and fc2 rows of an MLP unit) in the
parameters, the EMA and the optimizer moments, so the pruned model is smaller
and faster, not masked.
"""
import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np

from dit_jax import checkpointing
from dit_jax import data as data_lib
from dit_jax import importance as importance_lib
from dit_jax import memorization
from dit_jax import sharding
from dit_jax import state as state_lib
from dit_jax import train_step
from dit_jax import workdir as workdir_lib
from dit_jax.configlib import ConfigError, check_int
from dit_jax.models import dit

METHODS = importance_lib.METHODS
TARGETS = ("ratio", "capacity")
# which axis of each per-block array indexes heads / MLP units
HEAD_AXES = {"qkv_w": 2, "qkv_b": 1, "out_w": 0}
MLP_AXES = {"fc1_w": 1, "fc1_b": 0, "fc2_w": 0}


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
    tuned = train_step.run_steps(cand_setup, config, mesh, cand_state, dataset, step,
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
  scores = importance_lib.importance(pcfg.method, setup, params, dataset, pcfg,
                                     config.seed + step, mesh)
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


def check_config(p, steps):
  """config.prune: ConfigError naming the field and the fix."""
  check_int(p.at_step, "prune.at_step", low=-1)
  if p.at_step < 0:
    return
  if p.at_step > steps:
    raise ConfigError(f"config.prune.at_step={p.at_step} is after the last step {steps}; "
                      "raise config.train.steps, or set config.prune.at_step=-1 to train "
                      "without pruning.")
  check_int(p.finetune_steps, "prune.finetune_steps", low=0)
  if p.at_step + p.finetune_steps > steps:
    raise ConfigError(
        f"config.train.steps={steps} ends before config.prune.at_step + "
        f"config.prune.finetune_steps = {p.at_step + p.finetune_steps}; raise train.steps "
        "to that (or lower finetune_steps).")
  if p.method not in METHODS:
    raise ConfigError(f"config.prune.method={p.method!r}: use one of {METHODS}.")
  if p.target not in TARGETS:
    raise ConfigError(f"config.prune.target={p.target!r}: use one of {TARGETS}.")
  for field in ("ratio", "mlp_ratio"):
    if isinstance(p[field], bool) or not 0 <= p[field] < 1:
      raise ConfigError(f"config.prune.{field}={p[field]!r} must be in [0, 1).")
  if len(p.t_beta) != 2 or not all(b > 0 for b in p.t_beta):
    raise ConfigError(f"config.prune.t_beta={p.t_beta!r} must be two positive numbers (a, b).")
  for field in ("batches", "batch_size", "min_heads", "mlp_multiple", "capacity_steps",
                "capacity_probe", "specific_draws", "specific_select"):
    check_int(p[field], f"prune.{field}")


def prune_workdir(src, dst, **prune_fields):
  """One-shot pruning of the newest checkpoint of `src` into a new workdir `dst`.

  `src` is only read. `dst` gets config.json (with config.prune filled in) and a
  checkpoint at the same step holding the pruned state, so that
  `train_and_evaluate(config, dst)` with more steps fine-tunes it.
  """
  mesh = sharding.make_mesh()
  config, setup, state, meta = workdir_lib.load(src, mesh=mesh)
  config.prune.update(prune_fields)
  config.prune.at_step = step = meta["step"]
  config.train.steps = max(config.train.steps, step + config.prune.finetune_steps)
  check_config(config.prune, config.train.steps)
  dst = os.path.abspath(dst)
  if os.path.exists(workdir_lib.path(dst, workdir_lib.CHECKPOINTS)):
    raise ConfigError(f"{dst} already holds checkpoints; pick a new output workdir.")
  dataset = data_lib.load(config.data, config.seed)
  arch, state, record = prune(config, setup, state, dataset, mesh, step)
  os.makedirs(dst, exist_ok=True)
  ckpt = checkpointing.Checkpointer(workdir_lib.path(dst, workdir_lib.CHECKPOINTS),
                                    config.checkpoint.keep)
  ckpt.save(step, state, dict(meta, arch=arch.to_json(), pruned=record), force=True)
  ckpt.close()
  workdir_lib.write_config(config, dst)
  return config, record
