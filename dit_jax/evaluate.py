"""Sample-based evaluation: memorization ratio, quality, cost -> eval.json and report/."""
import json
import logging
import os
import time

import jax
import numpy as np

from dit_jax import data as data_lib
from dit_jax import evaluation
from dit_jax import fid as fid_lib
from dit_jax import memorization
from dit_jax import report
from dit_jax import state as state_lib
from dit_jax import writers
from dit_jax.models import dit

log = logging.getLogger("dit_jax")


def draw_samples(setup, scfg, params, num, seed, value_range, batch=256):
  """`num` samples in fixed-size jitted batches; returns (samples, images/s)."""
  batch = min(batch, num)
  sampler = state_lib.make_sampler(setup, scfg, batch, value_range)
  key = jax.random.PRNGKey(seed)
  jax.block_until_ready(sampler(params, key))  # compile outside the timing
  t0, out = time.perf_counter(), []
  for i in range(-(-num // batch)):
    out.append(np.asarray(sampler(params, jax.random.fold_in(key, i))))
  return np.concatenate(out)[:num], num / (time.perf_counter() - t0)


_feature_nets = {}  # (test split fingerprint, seed, steps) -> FeatureNet


def _features(dataset, seed, steps):
  """(feature fn, space name): a classifier trained on the test split, else pixels.

  The test split is the only data evaluation reads, so the feature net learns
  from it alone (never from the training images it would otherwise favour).
  One net per test split and seed serves every evaluation of a run.
  """
  if dataset.test_y is not None and dataset.num_classes:
    key = (data_lib.fingerprint(dataset.test_index), seed, steps)
    if key not in _feature_nets:
      _feature_nets[key] = evaluation.train_feature_net(
          dataset.test_x, dataset.test_y, dataset.num_classes, seed=seed, steps=steps)
    net = _feature_nets[key]
    return net.features, f"classifier (test-split acc {net.heldout_accuracy:.2f})"
  return (lambda x: np.asarray(x).reshape(len(x), -1)), "pixels"


_fid_nets = {}  # weights path -> fid.Network, loaded once per process


def fid_network(config, dataset):
  """The Inception network when config.eval.fid asks for FID on this data, else None.

  "auto" measures images with 3 channels; "on" also 1-channel images (replicated
  to RGB, as FID has no grey mode). gmm's raw vectors have no pixel range to map
  to uint8. Call it before sampling or compiling: missing weights fail in a second.
  """
  mode, channels = config.eval.fid, dataset.train_x.shape[-1]
  is_image = dataset.info.get("value_range") is not None
  if mode == "on" and not is_image:
    raise ValueError(f"config.eval.fid='on', but {dataset.info['name']!r} holds raw "
                     "vectors without a pixel range, not images; set config.eval.fid=off.")
  if mode == "off" or not is_image or (mode == "auto" and channels != 3):
    return None
  path = os.path.expanduser(config.eval.fid_weights)
  if path not in _fid_nets:
    _fid_nets[path] = fid_lib.load(path)
  return _fid_nets[path]


def fid_metrics(config, dataset, samples, net):
  """fid of the samples against the test split, with what it was computed on."""
  test = dataset.splits()["test"]
  label = f"{dataset.info['name']}_{dataset.info['image_shape'][0]}px_test_{test['fingerprint']}"
  cache = os.path.join(os.path.dirname(os.path.expanduser(config.eval.fid_weights)),
                       "fid_stats")
  value_range = dataset.info["value_range"]
  reference = fid_lib.reference_fit(net, dataset.test_x, label, cache, value_range,
                                    config.eval.fid_batch)
  return {"fid": fid_lib.fid(net, samples, reference, value_range, config.eval.fid_batch),
          "fid_num_samples": len(samples), "fid_reference": dict(test, split="test")}


def evaluate(config, setup, params, dataset, num=512, seed=0):
  """Samples `num` images from `params` and measures them; returns (summary, extras)."""
  fid_net = fid_network(config, dataset)  # before sampling: missing weights fail fast
  value_range = dataset.info.get("value_range")
  samples, imgs_per_s = draw_samples(setup, config.sample, params, num, seed, value_range)
  flat = samples.reshape(num, -1)
  train_flat = dataset.train_x.reshape(len(dataset.train_x), -1)
  d1, d2, nn = evaluation.nearest_two(flat, train_flat)
  ratio = np.sqrt(np.asarray(d1) / np.maximum(np.asarray(d2), 1e-20))
  out = {"num_samples": num, "mem_ratio": evaluation.memorization_ratio(d1, d2),
         "d_ratio_p10": float(np.quantile(ratio, 0.1)),
         "d_ratio_p50": float(np.quantile(ratio, 0.5)),
         "num_params": dit.num_params(setup.arch),
         "flops_per_image": dit.flops_per_image(setup.arch),
         "sample_images_per_sec": imgs_per_s,
         "sampler": f"{config.sample.method}-{config.sample.steps}"}
  gmm = memorization.gmm_params(dataset.info)
  if gmm is not None:
    out["nll"] = evaluation.gmm_nll_per_dim(flat, *gmm)
    out["nll_test_data"] = evaluation.gmm_nll_per_dim(
        dataset.test_x.reshape(len(dataset.test_x), -1), *gmm)
  features, space = _features(dataset, seed, config.eval.feature_steps)
  real, fake = features(dataset.test_x), features(samples)
  out["precision"], out["recall"] = map(float, evaluation.precision_recall(real, fake, k=3))
  out["fd"] = float(evaluation.frechet_distance(real, fake))
  out["fd_space"] = space
  out["splits"] = dataset.splits()
  if fid_net is not None:
    out.update(fid_metrics(config, dataset, samples, fid_net))
  return out, {"samples": samples, "d1sq": d1, "d2sq": d2, "nn": nn}


def write_report(workdir, sched, extras, dataset, prefix="", buckets=None):
  """The plots of DIR/report/: gap curves, gaps against t, d1/d2, nearest neighbours."""
  rdir = os.path.join(workdir, "report")
  rows = writers.read_metrics(workdir)
  tracked = [r for r in rows if "memo_ema/train_loss" in r]
  if tracked:
    report.plot_gap_curves(rows, os.path.join(rdir, "gap_curves.png"))
    b = buckets or sum(1 for k in tracked[-1] if k.startswith("memo_ema/gap_t"))
    t_mid = np.asarray(sched.from_unit((np.arange(b) + 0.5) / b), np.float64)
    if sched.discrete:  # show noise level as the DDPM index, offset to fit a log axis
      t_mid = t_mid + 1
    report.plot_gap_vs_t(tracked[-1], t_mid, os.path.join(rdir, "gap_vs_t.png"))
  vr = dataset.info.get("value_range")
  report.plot_ratio_hist(extras["d1sq"], extras["d2sq"],
                         os.path.join(rdir, f"{prefix}d_ratio_hist.png"))
  report.save_nn_pairs(extras["samples"], dataset.train_x, extras["nn"],
                       os.path.join(rdir, f"{prefix}nearest_train.png"), vr)
  report.save_grid(extras["samples"][:64], os.path.join(rdir, f"{prefix}samples.png"), vr)


def write_eval(workdir, summary):
  """Merges `summary` into DIR/eval.json (pruning adds before/after entries).

  "by_step" (one evaluation per step) merges entry by entry.
  """
  path = os.path.join(workdir, "eval.json")
  old = {}
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      old = json.load(f)
  by_step = dict(old.get("by_step", {}), **summary.get("by_step", {}))
  old.update(summary)
  if by_step:
    old["by_step"] = by_step
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(old, f, indent=2, sort_keys=True)
  os.replace(tmp, path)  # never a half-written eval.json
  return old


def evaluate_workdir(workdir, num=None, seed=0, step=None):
  """Evaluates the EMA weights of a checkpoint; writes eval.json and report/."""
  config, setup, state, meta = state_lib.load_workdir(workdir, step)
  dataset = data_lib.load(config.data, config.seed)
  num = num or config.eval.num
  summary, extras = evaluate(config, setup, state["ema"], dataset, num, seed)
  summary["step"] = meta["step"]
  write_report(workdir, setup.sched, extras, dataset)
  write_eval(workdir, summary)
  return summary


def format_summary(summary):
  keys = ["step", "mem_ratio", "nll", "precision", "recall", "fd", "fid", "num_params",
          "flops_per_image", "sample_images_per_sec"]
  return "  ".join(f"{k} {summary[k]:.4g}" if isinstance(summary[k], float) else f"{k} {summary[k]}"
                   for k in keys if k in summary)


def read_eval(workdir):
  path = os.path.join(workdir, "eval.json")
  if not os.path.exists(path):
    return {}
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def write_before_after(workdir, before, after, record, control=None):
  """report/prune_summary.md: the model before the prune, the equally fine-tuned
  unpruned control (when run) and the pruned model at the end."""
  keys = ["step", "mem_ratio", "precision", "recall", "fd", "fid", "nll", "num_params",
          "flops_per_image", "sample_images_per_sec"]
  keys = [k for k in keys if k in after]
  fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)
  lines = [f"Pruned at step {record['step']} by `{record['method']}`: heads "
           f"{record['heads_before']} -> {record['heads']}, MLP {record['mlp_before']} -> "
           f"{record['mlp']}.", "", "| model | " + " | ".join(keys) + " |",
           "|---" * (len(keys) + 1) + "|"]
  rows = (("before prune", before), ("control: unpruned, same fine-tuning", control),
          ("pruned, after fine-tuning", after))
  for name, row in rows:
    if row:
      lines.append(f"| {name} | " + " | ".join(fmt(row.get(k)) for k in keys) + " |")
  path = os.path.join(workdir, "report", "prune_summary.md")
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  return path
