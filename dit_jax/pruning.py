"""Structured pruning: physical surgery, the capacity search, pruning a run or a workdir.

Which units go is decided by dit_jax.importance. Surgery slices the arrays (q, k,
v and output rows of a head; fc1 columns and fc2 rows of an MLP unit) in the
parameters, the EMA and the optimizer moments, so the pruned model is smaller
and faster, not masked. Masked fine-tuning (unit_masks, apply_masks) keeps the
full shape instead, for prunes whose shapes differ but must share one program.
"""
import dataclasses
import functools
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


def _units(path, keep_h, keep_m):
  """(kept indices, unit axis) of the per-block array at `path`; None if it has no unit axis."""
  keys = [getattr(k, "key", getattr(k, "idx", None)) for k in path]
  if "blocks" not in keys:
    return None
  block, name = keys[keys.index("blocks") + 1], keys[-1]
  if name in HEAD_AXES:
    return keep_h[block], HEAD_AXES[name]
  if name in MLP_AXES:
    return keep_m[block], MLP_AXES[name]
  return None


def _slice_tree(tree, keep_h, keep_m):
  """Slices every per-block array found under a 'blocks' key (params, EMA, moments)."""
  def one(path, x):
    units = _units(path, keep_h, keep_m) if hasattr(x, "shape") else None
    return x if units is None else jnp.take(x, units[0], axis=units[1])
  return jax.tree_util.tree_map_with_path(one, tree)


def surgery(arch, state, keep_h, keep_m):
  """(new arch, new state): smaller arrays everywhere a parameter shape appears."""
  new_arch = dataclasses.replace(arch, heads=tuple(len(k) for k in keep_h),
                                 mlp=tuple(len(k) for k in keep_m))
  new_state = dict(state)
  for name in ("params", "ema", "opt_state"):
    new_state[name] = _slice_tree(state[name], keep_h, keep_m)
  return new_arch, new_state


def unit_masks(arch, keep_h, keep_m):
  """Params-shaped masks of the full `arch`: 0 on the removed units' arrays, 1 elsewhere.

  Masked fine-tuning keeps the full shape and holds the removed units at zero,
  so that prunes whose per-block widths differ still share one compiled program;
  up to rounding it computes what surgery followed by fine-tuning computes.
  """
  _, abstract = dit.abstract_model(arch)
  def one(path, x):
    mask = np.ones(x.shape, np.float32)
    units = _units(path, keep_h, keep_m)
    if units is not None:
      kept, axis = units
      shape = [1] * len(x.shape)
      shape[axis] = x.shape[axis]
      mask *= np.isin(np.arange(x.shape[axis]), kept).reshape(shape)
    return jnp.asarray(mask)
  return jax.tree_util.tree_map_with_path(one, abstract)


def apply_masks(state, masks):
  """`state` with the params, the EMA and every params-shaped optimizer tree times `masks`.

  Zeroing the Adam moments too is what keeps a removed unit at zero: a zero
  weight with zero moments and a zero gradient gets a zero update.
  """
  times = lambda tree: jax.tree.map(jnp.multiply, tree, masks)
  params_like = lambda x: jax.tree.structure(x) == jax.tree.structure(masks)
  opt_state = jax.tree.map(lambda x: times(x) if params_like(x) else x, state["opt_state"],
                           is_leaf=params_like)
  return dict(state, params=times(state["params"]), ema=times(state["ema"]), opt_state=opt_state)


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


CAPACITY_FITS = ("auto", "gt", "train_gt", "select", "train")
GT_FITS = ("gt", "train_gt")  # judged by the excess over the known density's true score


def capacity_fit(pcfg, dataset):
  """The data capacity candidates are fine-tuned and judged on (config.prune.capacity_fit).

  gt: the known density's true score, nothing read from any split; train_gt:
  the training set to fine-tune (as the run itself does), judged by the excess
  over the known density's true score (the width that generalizes best at this
  n, not the one the true score needs); select: the select split, one half to
  fine-tune and the other as the probe; train: the training set to fine-tune
  and the select split as the probe. auto: gt where the density is known, else
  select.
  """
  known = memorization.gmm_params(dataset.info) is not None
  if pcfg.capacity_fit == "auto":
    return "gt" if known else "select"
  if pcfg.capacity_fit in GT_FITS and not known:
    raise ConfigError(f"config.prune.capacity_fit={pcfg.capacity_fit!r} needs a dataset with "
                      "a known density (data.name='gmm'); use 'select', 'train' or 'auto'.")
  return pcfg.capacity_fit


def _select_halves(dataset):
  """A dataset whose train_x is the select split's first half and select_x its second."""
  half = len(dataset.select_x) // 2
  return dataclasses.replace(
      dataset, train_x=dataset.select_x[:half], select_x=dataset.select_x[half:],
      train_y=None if dataset.select_y is None else dataset.select_y[:half],
      select_y=None if dataset.select_y is None else dataset.select_y[half:])


def _candidate(scores, ratios, pcfg, setup, state):
  keep_h, keep_m = plan(scores, *ratios, pcfg.min_heads, pcfg.mlp_multiple)
  return surgery(setup.arch, state, keep_h, keep_m)


def capacity_search(config, setup, state, dataset, mesh, step, scores):
  """Smallest heads and MLP widths whose held-out loss stays within tolerance.

  Heads are searched first with every MLP unit kept, then MLP units with the
  heads found: each axis keeps cutting config.prune.capacity_ratios (by
  `scores`) until a cut's loss exceeds (1 + tolerance) times the unpruned
  model's, and takes the last cut within it. Every candidate, the unpruned
  reference included, is cut from the current state and fine-tuned
  capacity_steps on a copy, on the data capacity_fit names:
    gt      regressed onto the true score on fresh draws of the density; judged by
            the candidate's excess over the true score's loss on a fixed probe
            drawn from the density, summed over all t-buckets (the tolerance is
            on the excess: the true score's own loss would swamp it);
    train_gt  trained on the training set, judged by the same excess: the
            width that generalizes at this n rather than the one the score needs;
    select  trained on half the select split, judged on the held-out loss of the
            other half; train: trained on the training set, judged on the select
            split. Both sum the buckets where the reference generalizes
            (_generalizing_loss): memorization shows at small t, lost capacity
            where the model generalizes. They assume the probe is large and
            fresh enough that the held-out loss measures the score, not the
            probe.
  Returns ((heads ratio, MLP ratio), path): one record per candidate.
  """
  pcfg = config.prune
  fit = capacity_fit(pcfg, dataset)
  buckets = config.memo.buckets
  if fit in GT_FITS:
    gmm = memorization.gmm_params(dataset.info)
    shape = tuple(dataset.info["image_shape"])
    probe = memorization.GroundTruthProbe(setup.sched, gmm, shape, pcfg.capacity_probe,
                                          buckets, config.diffusion.weighting, config.seed)
    draw = lambda key, n: memorization.gmm_draws(key, n, gmm, shape)
    gt_loss = np.asarray(probe.gt_loss)
  else:
    data = _select_halves(dataset) if fit == "select" else dataset
    tracker = memorization.GapTracker(setup.sched, data, pcfg.capacity_probe, buckets,
                                      config.diffusion.weighting, config.seed)

  def measure(ratios, cand_setup, cand_state):
    rec = {"ratio": ratios[0], "mlp_ratio": ratios[1], "fit": fit,
           "num_params": dit.num_params(cand_setup.arch),
           "heads": list(cand_setup.arch.heads), "mlp": list(cand_setup.arch.mlp)}
    if fit in GT_FITS:
      if fit == "gt":
        tuned = train_step.run_distill_steps(cand_setup, config, mesh, cand_state,
                                             pcfg.capacity_steps, draw, probe.gt_eps)
      else:
        tuned = train_step.run_steps(cand_setup, config, mesh, cand_state, dataset, step,
                                     pcfg.capacity_steps)
      ex = np.asarray(jax.jit(lambda p: probe.excess(
          state_lib.make_eps_fn(cand_setup, p)))(tuned["params"]))
      rec.update(gt_excess_t=ex.tolist(), gt_loss_t=gt_loss.tolist(),
                 gt_excess=float(ex.mean()), heldout_loss=float((gt_loss + ex).mean()))
      return rec
    tuned = train_step.run_steps(cand_setup, config, mesh, cand_state, data, step,
                                 pcfg.capacity_steps)
    m = _probe_losses(tracker, cand_setup, tuned["params"])
    rec.update(heldout_t=[m[f"memo/heldout_loss_t{b}"] for b in range(buckets)],
               train_t=[m[f"memo/train_loss_t{b}"] for b in range(buckets)])
    rec.update({k.split("/")[1]: m[k] for k in ("memo/heldout_loss", "memo/train_loss",
                                                "memo/gap_index", "memo/index") if k in m})
    return rec

  path = [measure((0.0, 0.0), setup, state)]
  ref = path[0]

  def over_reference(rec):
    if fit in GT_FITS:  # the probe's loss, the true score's plus the excess, over the reference's
      return rec["heldout_loss"] / max(ref["heldout_loss"], 1e-12)
    cand, base, rec["buckets"] = _generalizing_loss(rec, (ref["heldout_t"], ref["train_t"]))
    return cand / max(base, 1e-12)

  chosen = [0.0, 0.0]
  for axis in (0, 1):  # heads, then MLP units with the heads found
    shape_before = None
    for ratio in pcfg.capacity_ratios:
      ratios = list(chosen)
      ratios[axis] = ratio
      arch, cand = _candidate(scores, ratios, pcfg, setup, state)
      if (arch.heads, arch.mlp) == shape_before:
        continue  # the floor (min_heads, mlp_multiple) allows no further cut
      shape_before = (arch.heads, arch.mlp)
      rec = measure(tuple(ratios), state_lib.make_setup(config, arch), cand)
      rec["axis"] = ("heads", "mlp")[axis]
      rec["loss_over_reference"] = float(over_reference(rec))
      if fit in GT_FITS:
        # the probe loss is the true score's irreducible loss plus the excess, and the
        # first is ~80x the second on gmm: the tolerance applies to the excess alone
        rec["excess_over_reference"] = rec["gt_excess"] / max(ref["gt_excess"], 1e-12)
        rec["within_tolerance"] = rec["excess_over_reference"] <= 1 + pcfg.tolerance
      else:
        rec["within_tolerance"] = rec["loss_over_reference"] <= 1 + pcfg.tolerance
      path.append(rec)
      if not rec["within_tolerance"]:
        break
      chosen[axis] = ratio
  return tuple(chosen), path


@functools.lru_cache(maxsize=64)  # the loop asks for a batch seed every step
def derived_seed(seed, *more):
  """One 31-bit seed from the run's seed and more numbers (distinct inputs, distinct streams)."""
  return int(np.random.SeedSequence([seed, *more]).generate_state(1)[0] >> 1)


def choose(config, setup, state, dataset, mesh, step):
  """Kept heads and MLP units per block for config.prune at `step`, and a record."""
  pcfg = config.prune
  params = state["ema"] if pcfg.use_ema else state["params"]
  seed = config.seed + step if pcfg.mask_seed < 0 else derived_seed(config.seed, pcfg.mask_seed)
  scores = importance_lib.importance(pcfg.method, setup, params, dataset, pcfg, seed, mesh)
  record = {"method": pcfg.method, "target": pcfg.target}
  if pcfg.target == "capacity":
    ratios, record["capacity_path"] = capacity_search(config, setup, state, dataset, mesh,
                                                      step, scores)
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
  if p.capacity_fit not in CAPACITY_FITS:
    raise ConfigError(f"config.prune.capacity_fit={p.capacity_fit!r}: use one of "
                      f"{CAPACITY_FITS}.")
  for field in ("ratio", "mlp_ratio"):
    if isinstance(p[field], bool) or not 0 <= p[field] < 1:
      raise ConfigError(f"config.prune.{field}={p[field]!r} must be in [0, 1).")
  if len(p.t_beta) != 2 or not all(b > 0 for b in p.t_beta):
    raise ConfigError(f"config.prune.t_beta={p.t_beta!r} must be two positive numbers (a, b).")
  check_int(p.mask_seed, "prune.mask_seed", low=-1)
  check_int(p.finetune_seed, "prune.finetune_seed", low=-1)
  for field in ("batches", "batch_size", "min_heads", "mlp_multiple", "capacity_steps",
                "capacity_probe", "specific_draws", "specific_select"):
    check_int(p[field], f"prune.{field}")


def prune_workdir(src, dst, control=False, **prune_fields):
  """One-shot pruning of the newest checkpoint of `src` into a new workdir `dst`.

  `src` is only read. `dst` gets config.json (with config.prune filled in) and a
  checkpoint at the same step holding the pruned state, so that
  `train_and_evaluate(config, dst)` with more steps fine-tunes it. With `control`,
  dst/control/ also gets the unpruned state at that step: the fine-tuning run then
  trains the control from there (never from step 0, whatever src's config said).
  """
  workdir_lib.check_local(dst)
  mesh = sharding.make_mesh()
  config, setup, state, meta = workdir_lib.load(src, mesh=mesh)
  config.prune.update(prune_fields)
  config.prune.control = control
  if control and not config.prune.finetune_steps:
    raise ConfigError("a control is the unpruned model fine-tuned the same steps: give "
                      "finetune_steps > 0 with it (--finetune_steps N).")
  config.prune.at_step = step = meta["step"]
  if meta.get("tracker_stop"):  # the source ended at its tracker stop: fine-tune from there
    config.train.steps = step + config.prune.finetune_steps
  else:
    config.train.steps = max(config.train.steps, step + config.prune.finetune_steps)
  # the fine-tuning trains to its own end (memo.stop_at and a prune exclude each other)
  config.memo.stop_at = 0.0
  meta = dict(meta, tracker_stop=None)
  check_config(config.prune, config.train.steps)
  dst = os.path.abspath(dst)
  if os.path.exists(workdir_lib.path(dst, workdir_lib.CHECKPOINTS)):
    raise ConfigError(f"{dst} already holds checkpoints; pick a new output workdir.")
  dataset = data_lib.load(config.data, config.seed)
  os.makedirs(dst, exist_ok=True)
  if control:  # before the prune, which may reuse the unpruned arrays' buffers
    _save_step(workdir_lib.path(dst, workdir_lib.CONTROL, workdir_lib.CHECKPOINTS),
               config, step, state, meta)
  arch, state, record = prune(config, setup, state, dataset, mesh, step)
  _save_step(workdir_lib.path(dst, workdir_lib.CHECKPOINTS), config, step, state,
             dict(meta, arch=arch.to_json(), pruned=record))
  workdir_lib.write_config(config, dst)
  return config, record


def _save_step(directory, config, step, state, meta):
  ckpt = checkpointing.Checkpointer(directory, config.checkpoint.keep, async_save=False)
  ckpt.save(step, state, meta, force=True)
  ckpt.close()
