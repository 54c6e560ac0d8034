"""Runs the points of a sweep file, resumably, and tabulates them with intervals.

A sweep file has get_config(arg), the config every point starts from, and
get_sweep(arg), a list of points run in order. A point is a dict:
  name        its workdir under the sweep's workdir;
  method      the row label (e.g. "random"); budget: the group whose rows
              compare at equal budget (e.g. "h20m50"); seed;
  at          the reference step: fine-tuning steps are counted from it;
  overrides   dotted config overrides;
  start_from  optional (point name, step): a copy of that point's checkpoint is
              where this one starts (a base run shared by the points of a seed);
  needs       optional {dotted key: (point name, dotted key in its eval.json)}:
              values chosen by an earlier point (e.g. the width a capacity
              search picked, so that other methods cut the same).
Each point ends with an eval.json; a point whose eval.json is at its last step
is read, not rerun, so the same command resumes an interrupted sweep.
"""
import csv
import logging
import os
import shutil
import tempfile

import numpy as np

from dit_jax import config_check
from dit_jax import configlib
from dit_jax import distributed
from dit_jax import report
from dit_jax import stats
from dit_jax import train
from dit_jax import workdir as workdir_lib
from dit_jax import writers
from dit_jax.configlib import ConfigError

log = logging.getLogger("dit_jax")

COLUMNS = ["name", "method", "budget", "seed", "data", "ratio", "mlp_ratio", "heads", "mlp",
           "mem_ratio", "precision", "recall", "fd", "fid", "nll", "num_params", "flops_per_image",
           "train_steps_per_sec", "sample_images_per_sec", "step", "ft_steps"]
# per evaluated step: the evaluation and what the gap tracker said at that step
STEP_COLUMNS = ["name", "method", "budget", "seed", "data", "step", "ft_steps", "mem_ratio",
                "precision", "recall", "fd", "fid", "nll", "d_ratio_p50", "num_params",
                "memo_ema/gap", "memo_ema/index", "memo_ema/train_loss",
                "memo_ema/heldout_loss", "memo/gap", "memo/index",
                # known density: the held-out loss's excess over the true score's, per
                # t-bucket of the default 8 (small t first), and the true score's loss
                "memo/gt_heldout_loss", "memo_ema/gt_excess"] + [
                    f"memo_ema/gt_excess_t{b}" for b in range(8)]
QUALITY = ("mem_ratio", "fd", "fid", "nll", "precision", "recall")  # absent ones are left out
LOWER_IS_BETTER = {"mem_ratio": True, "fd": True, "fid": True, "nll": True, "precision": False,
                   "recall": False}
CONTROL = "original"  # the method name of the equally fine-tuned, unpruned control
REFERENCE = "random"  # the baseline every method is compared with at its budget


def _lookup(tree, dotted):
  for part in dotted.split("."):
    tree = tree[part]
  return tree


def _read_eval(pdir):
  return workdir_lib.read_eval(pdir) or None


def point_config(base, point, workdir):
  """The finalized config of a point; its `needs` are read from earlier points."""
  config = configlib.with_overrides(base, point.get("overrides", {}))
  needs = {}
  for key, (source, field) in point.get("needs", {}).items():
    ev = _read_eval(os.path.join(workdir, source))
    if ev is None:
      raise ConfigError(f"sweep point {point['name']!r} needs {field!r} of point {source!r}, "
                       "which has not run; list it earlier in get_sweep().")
    value = _lookup(ev, field)
    needs[key] = tuple(value) if isinstance(value, list) else value
  return config_check.finalize(configlib.with_overrides(config, needs))


def _is_done(pdir, config):
  ev = _read_eval(pdir)
  # `unfinished`: stopped after its last step, e.g. while its control trained
  return ev is not None and ev.get("step") == config.train.steps and "unfinished" not in ev


def _start(point, pdir, workdir):
  """Copies the checkpoint a point starts from (the source stays as it is).

  Process 0 copies into a hidden temporary directory and renames it into place,
  so a crash mid-copy leaves no partial checkpoints/ for the next command to resume
  from, and hosts on a shared filesystem do not race; the others wait for it.
  """
  if "start_from" not in point:
    return
  source, step = point["start_from"]
  src = workdir_lib.path(workdir, source, workdir_lib.CHECKPOINTS, str(step))
  target = workdir_lib.path(pdir, workdir_lib.CHECKPOINTS)
  if workdir_lib.is_writer() and not os.path.isdir(target):
    if not os.path.isdir(src):
      raise ConfigError(f"sweep point {point['name']!r} starts from {src}, which does not "
                        f"exist; point {source!r} must run to step {step} first.")
    os.makedirs(pdir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".checkpoints.copying.", dir=pdir)
    shutil.copytree(src, os.path.join(tmp, str(step)))
    os.rename(tmp, target)
  distributed.barrier("dit_jax_sweep_start")  # the copy is in place for every process


def _other_points(workdir, names):
  """The csv rows an earlier command wrote for points this one does not list (a workdir
  grown in parts, e.g. a budget added to finished seeds): kept, so that sweep.csv and
  sweep_steps.csv hold every point of the workdir, not only the last command's."""
  out = []
  for file in ("sweep.csv", "sweep_steps.csv"):
    path = os.path.join(workdir, file)
    rows = read_csv(path) if os.path.exists(path) else []
    out.append([r for r in rows if r["name"] not in names])
  if out[0]:
    log.info("sweep: keeping the rows of %d point(s) of %s this command does not list",
             len(out[0]), workdir)
  return out


def run_sweep(config_path, workdir, overrides=None):
  """Runs every point of `path.py[:arg]`; finished points are read, not rerun.

  `overrides` (dotted keys) apply to the base config of every point. Returns
  (rows, step_rows, summary markdown), with the rows of points an earlier command put
  in this workdir first.
  """
  path, _, arg = config_path.partition(":")
  module = configlib.load_config_file(path)
  base, points = module.get_config(arg or None), module.get_sweep(arg or None)
  base = configlib.with_overrides(base, overrides or {})
  names = [p["name"] for p in points]
  if len(set(names)) != len(names):
    raise ConfigError(f"{path}: get_sweep() repeats point names; each needs its own workdir.")
  rows, step_rows = _other_points(workdir, names)
  stopped = None
  for i, point in enumerate(points):
    pdir = os.path.join(workdir, point["name"])
    config = point_config(base, point, workdir)
    if not _is_done(pdir, config):
      log.info("sweep point %d/%d: %s", i + 1, len(points), point["name"])
      _start(point, pdir, workdir)
      if train.train_and_evaluate(config, pdir).stop_requested:
        stopped = point["name"]
        break
    rows.append(_row(point, config, pdir))
    step_rows.extend(_step_rows(point, config, pdir))
    write_csv(rows, os.path.join(workdir, "sweep.csv"), COLUMNS)
    write_csv(step_rows, os.path.join(workdir, "sweep_steps.csv"), STEP_COLUMNS)
  summary = summarize(step_rows)
  workdir_lib.atomic_write(os.path.join(workdir, "sweep_summary.md"), summary)
  if workdir_lib.is_writer():
    plot(step_rows, os.path.join(workdir, "sweep.png"))
  if stopped:  # the tables so far are written; the caller's exit status says it stopped
    raise train.StoppedEarly(f"sweep stopped at point {stopped}; run the same command "
                             "again to resume")
  return rows, step_rows, summary


def _labels(point, config):
  return dict(name=point["name"], method=point["method"], budget=point.get("budget", ""),
              seed=config.seed, data=config.data.name)


def _row(point, config, pdir):
  """The point at its last step: one row of sweep.csv."""
  ev = _read_eval(pdir)
  prune = ev.get("prune") or {}
  at = point.get("at", 0)
  row = {k: ev.get(k) for k in COLUMNS}
  row.update(_labels(point, config), ratio=prune.get("ratio", 0.0),
             mlp_ratio=prune.get("mlp_ratio", 0.0),
             heads="+".join(map(str, config.model.heads if not prune else prune["heads"])),
             mlp="+".join(map(str, config.model.mlp if not prune else prune["mlp"])),
             ft_steps=ev["step"] - at,
             train_steps_per_sec=writers.median_steps_per_sec(
                 writers.read_metrics(pdir), first=at + config.log_every))
  return row


def _step_rows(point, config, pdir):
  """One row per evaluated step, with the tracker's reading at that step."""
  ev = _read_eval(pdir)
  metrics = {r["step"]: r for r in writers.read_metrics(pdir)}
  out = []
  for step, summary in sorted(ev.get("by_step", {}).items(), key=lambda kv: int(kv[0])):
    step = int(step)
    row = {k: summary.get(k) for k in STEP_COLUMNS}
    row.update(_labels(point, config), step=step, ft_steps=step - point.get("at", 0))
    row.update({k: metrics.get(step, {}).get(k) for k in STEP_COLUMNS if "/" in k})
    out.append(row)
  return out


def write_csv(rows, path, columns):
  if not workdir_lib.is_writer():
    return
  tmp = path + ".tmp"
  with open(tmp, "w", newline="", encoding="utf-8") as f:
    w = csv.DictWriter(f, columns, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
  os.replace(tmp, path)


def read_csv(path):
  """Rows of a sweep csv with numbers parsed back (empty cells are None)."""
  def parse(v):
    if v == "":
      return None
    try:
      return int(v)
    except ValueError:
      try:
        return float(v)
      except ValueError:
        return v
  with open(path, encoding="utf-8") as f:
    return [{k: parse(v) for k, v in r.items()} for r in csv.DictReader(f)]


def _by_seed(rows, method, budget, ft, key):
  return {r["seed"]: r.get(key) for r in rows
          if r["method"] == method and r["budget"] == budget and r["ft_steps"] == ft}


def comparisons(rows, ft, metrics=QUALITY):
  """At fine-tuning step `ft`: per budget and method, each metric's interval over seeds
  and its paired differences against the control and against random at that budget."""
  out = []
  control = [r for r in rows if r["method"] == CONTROL and r["ft_steps"] == ft]
  control_budget = control[0]["budget"] if control else None
  budgets = list(dict.fromkeys(r["budget"] for r in rows if r["ft_steps"] == ft
                               and r["method"] != CONTROL and r["budget"] != "base"))
  for budget in [control_budget] * bool(control) + budgets:
    methods = list(dict.fromkeys(r["method"] for r in rows
                                 if r["budget"] == budget and r["ft_steps"] == ft))
    for m in methods:
      rec = {"budget": budget, "method": m, "ft_steps": ft}
      for key in metrics:
        vals = _by_seed(rows, m, budget, ft, key)
        if not any(v is not None for v in vals.values()):
          continue
        rec[key] = stats.t_interval(vals.values())
        if m != CONTROL and control:
          rec[f"{key}-control"] = stats.paired(vals, _by_seed(rows, CONTROL, control_budget,
                                                              ft, key))
        if m != REFERENCE and budget != control_budget:
          ref = _by_seed(rows, REFERENCE, budget, ft, key)
          if ref:
            rec[f"{key}-random"] = stats.paired(vals, ref)
      out.append(rec)
  return out


def summarize(rows, metrics=QUALITY):
  """Markdown: per evaluated fine-tuning step, mean ± 95% interval over seeds of each
  metric, and paired differences against the control and against random."""
  fts = sorted({r["ft_steps"] for r in rows if r["budget"] != "base" and r["ft_steps"] > 0})
  lines = []
  for ft in fts:
    recs = comparisons(rows, ft, metrics)
    cols = [m for m in metrics if any(m in r for r in recs)]
    if not recs:
      continue
    lines += [f"### {ft} fine-tuning steps", "",
              "mean ± 95% t-interval over seeds; `vs control` and `vs random`: the paired "
              "per-seed difference (method minus the other) and its 95% interval.", "",
              "| budget | method | seeds | " + " | ".join(cols)
              + " | mem_ratio vs control | mem_ratio vs random | fd vs random |",
              "|---" * (len(cols) + 6) + "|"]
    for r in recs:
      cells = [stats.fmt_interval(*r[c][:2]) if c in r else "-" for c in cols]
      diff = lambda key: (stats.fmt_interval(*r[key][:2]) + f" ({stats.verdict(*r[key][:2], LOWER_IS_BETTER[key.split('-')[0]])})"
                          if key in r else "-")
      n = max((r[c][2] for c in cols if c in r), default=0)
      lines.append(f"| {r['budget']} | {r['method']} | {n} | " + " | ".join(cells)
                   + f" | {diff('mem_ratio-control')} | {diff('mem_ratio-random')}"
                   + f" | {diff('fd-random')} |")
    lines.append("")
  return "\n".join(lines)


def plot(rows, path):
  """mem_ratio against fine-tuning steps per budget and method (mean ± 95% interval)."""
  budgets = list(dict.fromkeys(r["budget"] for r in rows
                               if r["budget"] not in ("base",) and r["method"] != CONTROL))
  fig, axes = report.new_figure(max(1, len(budgets)), width=4.5)
  for ax, budget in zip(axes, budgets or [None]):
    methods = list(dict.fromkeys(r["method"] for r in rows
                                 if r["budget"] == budget or r["method"] == CONTROL))
    for m in methods:
      rs = [r for r in rows if r["method"] == m and (r["budget"] == budget or m == CONTROL)
            and r["ft_steps"] > 0 and r.get("mem_ratio") is not None]
      fts = sorted({r["ft_steps"] for r in rs})
      iv = [stats.t_interval([r["mem_ratio"] for r in rs if r["ft_steps"] == f]) for f in fts]
      if fts:
        ax.errorbar(fts, [v[0] for v in iv], yerr=[np.nan_to_num(v[1]) for v in iv],
                    marker="o", capsize=3, label=m)
    ax.set(xlabel="fine-tuning steps", ylabel="memorization ratio", title=f"budget {budget}")
    ax.legend(fontsize=7)
  return report.save_figure(fig, path)
