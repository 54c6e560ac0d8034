"""Sample-based evaluation: memorization ratio, quality, cost -> eval.json and report/.

Reads the training split (memorization is nearness to it) and the test split
(quality references); never the select split, which chose.
"""
import logging
import os

import jax
import numpy as np

from dit_jax import data as data_lib
from dit_jax import fid as fid_lib
from dit_jax import latents
from dit_jax import likelihood
from dit_jax import memorization
from dit_jax import report
from dit_jax import sample_metrics
from dit_jax import sampling
from dit_jax import sharding
from dit_jax import workdir as workdir_lib
from dit_jax import writers
from dit_jax.configlib import ConfigError
from dit_jax.models import dit

log = logging.getLogger("dit_jax")


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
      _feature_nets[key] = sample_metrics.train_feature_net(
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
  dataset = latents.pixel_dataset(dataset)  # a latent run's FID is on decoded images
  mode, channels = config.eval.fid, dataset.train_x.shape[-1]
  is_image = dataset.info["value_range"] is not None
  if mode == "on" and not is_image:
    raise ConfigError(f"config.eval.fid='on', but {dataset.info['name']!r} holds raw "
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


def evaluate(config, setup, params, dataset, num=512, seed=0, mesh=None):
  """Samples `num` images from `params` and measures them; returns (summary, extras).

  Sampling is split over the mesh; every process measures the gathered samples.
  """
  pixels = latents.pixel_dataset(dataset)  # judging reads images, a latent run's too
  latent = pixels is not dataset
  modelled = dataset  # what the model's likelihood is of: a latent run's latents
  fid_net = fid_network(config, dataset)  # before sampling: missing weights fail fast
  samples, imgs_per_s = sampling.draw_samples(setup, config.sample, params, num, seed,
                                              dataset.info["value_range"], mesh=mesh)
  samples, dataset = latents.decode(dataset, samples), pixels
  flat = samples.reshape(num, -1)
  if isinstance(dataset.train_x, np.ndarray):
    d1, d2, nn = sample_metrics.nearest_two(flat, dataset.train_x)
  else:  # a training split read from disk: streamed
    d1, d2, nn = sample_metrics.nearest_two_streamed(flat, data_lib.chunks(dataset.train_x))
  ratio = sample_metrics.d_ratio(d1, d2)
  out = {"num_samples": num, "mem_ratio": sample_metrics.memorization_ratio(d1, d2),
         "d_ratio_p10": float(np.quantile(ratio, 0.1)),
         "d_ratio_p50": float(np.quantile(ratio, 0.5)),
         "num_params": dit.num_params(setup.arch),
         "flops_per_image": dit.flops_per_image(setup.arch),
         "sample_images_per_sec": imgs_per_s,
         "sampler": f"{config.sample.method}-{config.sample.steps}"}
  gmm = memorization.gmm_params(dataset.info)
  if gmm is not None:
    out.update(density_quality(flat, dataset, gmm))
  if config.eval.nll_num:
    out.update(model_likelihood(config, setup, params, modelled, seed))
  features, space = _features(dataset, seed, config.eval.feature_steps)
  real, fake = features(dataset.test_x), features(samples)
  out["precision"], out["recall"] = map(float, sample_metrics.precision_recall(real, fake, k=3))
  out["fd"] = float(sample_metrics.frechet_distance(real, fake))
  out["fd_space"] = space
  out["splits"] = dataset.splits()
  if latent:
    out["mem_space"] = latents.MEM_SPACE
  if fid_net is not None:
    out.update(fid_metrics(config, dataset, samples, fid_net))
  return out, {"samples": samples, "d1sq": d1, "d2sq": d2, "nn": nn}


def density_quality(flat, dataset, gmm):
  """Sample quality against a known density, in forms copying cannot win.

  nll, the density's NLL of the samples, is lowest for samples piled on the
  modes, which a memorizing model's are; fresh draws (the test split) score the
  density's entropy H, so nll_excess = |nll - H| is 0 for a perfect model and
  rises either way. energy_distance compares the samples with the test split
  itself (0 for equal distributions; the Euclidean energy distance).
  """
  test = dataset.test_x.reshape(len(dataset.test_x), -1)
  nll = sample_metrics.gmm_nll_per_dim(flat, *gmm)
  entropy = sample_metrics.gmm_nll_per_dim(test, *gmm)
  return {"nll": nll, "nll_test_data": entropy, "nll_excess": abs(nll - entropy),
          "energy_distance": sample_metrics.energy_distance(flat, test)}


def likelihood_points(dataset, num):
  """Up to `num` points of the test split and of the training set, fixed per split."""
  # a split read from disk (DiskRows) slices like an array and reads only those rows
  return {"test": np.asarray(dataset.test_x[:num]), "train": np.asarray(dataset.train_x[:num])}


def model_likelihood(config, setup, params, dataset, seed):
  """test_nll, train_nll and nll_gap of the weights (likelihood.model_nll)."""
  opts = likelihood.options_from_config(config.eval)
  key = jax.random.fold_in(jax.random.PRNGKey(seed), 7)
  return likelihood.model_nll(likelihood.ModelEps(setup.arch, setup.sched), setup.sched,
                              likelihood_points(dataset, config.eval.nll_num), key, opts,
                              dataset.info["value_range"], params)


def write_report(workdir, sched, extras, dataset, prefix="", buckets=None):
  """The plots of DIR/report/: gap curves, gaps against t, d1/d2, nearest neighbours."""
  if not workdir_lib.is_writer():
    return
  dataset = latents.pixel_dataset(dataset)

  def rpath(name):
    return workdir_lib.path(workdir, workdir_lib.REPORT, name)
  rows = writers.read_metrics(workdir)
  tracked = [r for r in rows if "memo_ema/train_loss" in r]
  if tracked:
    report.plot_gap_curves(rows, rpath("gap_curves.png"))
    b = buckets or sum(1 for k in tracked[-1] if k.startswith("memo_ema/gap_t"))
    t_mid = np.asarray(sched.from_unit((np.arange(b) + 0.5) / b), np.float64)
    if sched.discrete:  # show noise level as the DDPM index, offset to fit a log axis
      t_mid = t_mid + 1
    report.plot_gap_vs_t(tracked[-1], t_mid, rpath("gap_vs_t.png"))
  vr = dataset.info["value_range"]
  report.plot_ratio_hist(extras["d1sq"], extras["d2sq"], rpath(f"{prefix}d_ratio_hist.png"))
  report.save_nn_pairs(extras["samples"], dataset.train_x, extras["nn"], extras["d1sq"],
                       extras["d2sq"], rpath(f"{prefix}nearest_train.png"), vr)
  report.save_grid(extras["samples"][:64], rpath(f"{prefix}samples.png"), vr)


def evaluate_workdir(workdir, num=None, seed=0, step=None):
  """Evaluates the EMA weights of a checkpoint; writes eval.json and report/."""
  mesh = sharding.make_mesh()
  config, setup, state, meta = workdir_lib.load(workdir, step, mesh, keys=("ema",))
  dataset = data_lib.load(config.data, config.seed)
  num = num or config.eval.num
  summary, extras = evaluate(config, setup, state["ema"], dataset, num, seed, mesh)
  summary["step"] = meta["step"]
  write_report(workdir, setup.sched, extras, dataset)
  workdir_lib.write_eval(workdir, summary, by_step={str(meta["step"]): summary})
  return summary


def format_summary(summary):
  keys = ["step", "mem_ratio", "nll_gap", "test_nll", "nll", "energy_distance", "precision",
          "recall", "fd", "fid", "num_params", "flops_per_image", "sample_images_per_sec"]
  return "  ".join(f"{k} {summary[k]:.4g}" if isinstance(summary[k], float) else f"{k} {summary[k]}"
                   for k in keys if k in summary)


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
  file = workdir_lib.path(workdir, workdir_lib.REPORT, "prune_summary.md")
  workdir_lib.atomic_write(file, "\n".join(lines) + "\n")
  return file
