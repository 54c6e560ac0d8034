"""Runs the points of a sweep file, resumably, sharing one base run per seed."""
import csv
import json
import logging
import os
import shutil

import numpy as np

from dit_jax import configlib
from dit_jax import report
from dit_jax import train
from dit_jax import writers

log = logging.getLogger("dit_jax")

COLUMNS = ["name", "method", "seed", "data", "ratio", "mlp_ratio", "mem_ratio", "precision",
           "recall", "fd", "nll", "num_params", "flops_per_image", "train_steps_per_sec",
           "sample_images_per_sec", "step"]


def _base(config, workdir, at):
  """Trains (or finds) the shared unpruned run to step `at` for this seed."""
  base = configlib.with_overrides(config, {"prune.at_step": -1, "train.steps": at, "eval.at_end": False})
  bdir = os.path.join(workdir, f"base-s{base.seed}")
  if not os.path.isdir(os.path.join(bdir, "checkpoints", str(at))):
    train.train_and_evaluate(base, bdir)
  return bdir


def _row(point, config, pdir):
  with open(os.path.join(pdir, "eval.json"), encoding="utf-8") as f:
    ev = json.load(f)
  prune = ev.get("prune") or {}
  at = config.prune.at_step if config.prune.at_step >= 0 else -1
  speeds = [r["train/steps_per_sec"] for r in writers.read_metrics(pdir)
            if "train/steps_per_sec" in r and r["step"] > at + config.log_every]
  row = {k: ev.get(k) for k in COLUMNS}
  row.update(name=point["name"], method=point["method"], seed=config.seed,
             data=config.data.name, ratio=prune.get("ratio", 0.0),
             mlp_ratio=prune.get("mlp_ratio", 0.0),
             train_steps_per_sec=float(np.median(speeds)) if speeds else None)
  return row


def run_sweep(config_path, workdir, overrides=None):
  """Runs every point of `path.py[:arg]`; finished points are read, not rerun.

  `overrides` (dotted keys) apply to the base config of every point.
  """
  path, _, arg = config_path.partition(":")
  module = configlib.load_config_file(path)
  base, points = module.get_config(arg or None), module.get_sweep(arg or None)
  base = configlib.with_overrides(base, overrides or {})
  at, ft = base.prune.at_step, base.prune.finetune_steps
  rows = []
  for i, point in enumerate(points):
    config = configlib.with_overrides(base, {**point["overrides"], "train.steps": at + ft})
    pdir = os.path.join(workdir, point["name"])
    done = os.path.join(pdir, "eval.json")
    if not (os.path.exists(done) and json.load(open(done)).get("step") == at + ft):
      log.info("sweep point %d/%d: %s", i + 1, len(points), point["name"])
      bdir = _base(config, workdir, at)
      if not os.path.isdir(os.path.join(pdir, "checkpoints")):
        # start from the base run's checkpoint at the prune step (a copy; the base stays)
        shutil.copytree(os.path.join(bdir, "checkpoints", str(at)),
                        os.path.join(pdir, "checkpoints", str(at)))
      if train.train_and_evaluate(config, pdir).stop_requested:
        log.warning("sweep stopped at %s; run the same command again to resume", point["name"])
        break
    rows.append(_row(point, config, pdir))
    write_csv(rows, os.path.join(workdir, "sweep.csv"))
  summary = summarize(rows)
  with open(os.path.join(workdir, "sweep_summary.md"), "w", encoding="utf-8") as f:
    f.write(summary)
  plot(rows, os.path.join(workdir, "sweep.png"))
  return rows, summary


def write_csv(rows, path):
  tmp = path + ".tmp"
  with open(tmp, "w", newline="", encoding="utf-8") as f:
    w = csv.DictWriter(f, COLUMNS)
    w.writeheader()
    w.writerows(rows)
  os.replace(tmp, path)


def _ms(values):
  vals = [v for v in values if v is not None]
  if not vals:
    return "-"
  return f"{np.mean(vals):.3g} ± {np.std(vals):.2g}" if len(vals) > 1 else f"{vals[0]:.3g}"


def summarize(rows):
  """A markdown table: mean ± std over seeds for each method."""
  methods = list(dict.fromkeys(r["method"] for r in rows))
  cols = ["mem_ratio", "precision", "recall", "fd", "nll", "num_params", "flops_per_image",
          "train_steps_per_sec", "sample_images_per_sec"]
  cols = [c for c in cols if any(r.get(c) is not None for r in rows)]
  lines = ["| method | seeds | " + " | ".join(cols) + " |",
           "|---" * (len(cols) + 2) + "|"]
  for m in methods:
    rs = [r for r in rows if r["method"] == m]
    lines.append(f"| {m} | {len(rs)} | " + " | ".join(_ms([r.get(c) for r in rs]) for c in cols)
                 + " |")
  return "\n".join(lines) + "\n"


def plot(rows, path):
  import matplotlib.pyplot as plt  # Agg is selected by dit_jax.report
  methods = list(dict.fromkeys(r["method"] for r in rows))
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
  for i, m in enumerate(methods):
    rs = [r for r in rows if r["method"] == m and r.get("mem_ratio") is not None]
    ys = [r["mem_ratio"] for r in rs]
    ax1.errorbar([i], [np.mean(ys)], yerr=[np.std(ys)], fmt="o", capsize=4)
    ax1.plot([i] * len(ys), ys, ".", color="gray")
    ax2.scatter([r["num_params"] for r in rs], ys, label=m)
  ax1.set_xticks(range(len(methods)), methods, rotation=20)
  ax1.set(ylabel="memorization ratio", title="mean ± std over seeds")
  ax2.set(xlabel="parameters", ylabel="memorization ratio", title="memorization vs size")
  ax2.legend(fontsize=8)
  return report.save_figure(fig, path)
