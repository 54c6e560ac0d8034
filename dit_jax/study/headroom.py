"""Headroom for unit choice: the spread of outcomes across pruning masks against the
spread across fine-tuning reruns of one mask (configs/sweeps/headroom.py).

Within each seed, masks differ in which units go (same fine-tuning noise) and
reruns in fine-tuning noise only (mask 0, which is also rerun 0). Pooling the
within-seed variances over seeds, the ratio var(masks) / var(reruns) is 1 when
the mask does not matter; its 95% interval is the F distribution's. A mask
effect whose interval lies above 1 is room an importance score could use.
"""
import math

import numpy as np
from scipy import stats as scipy_stats

JUDGED = ("nll_gap", "memo_ema/gt_excess")  # PLAN.md's outcomes; the table shows more


def groups(rows, key, ft=None):
  """{seed: (mask outcomes, rerun outcomes)} at the points' last (or `ft`) step."""
  out = {}
  for r in rows:
    if r["method"] not in ("mask", "rerun") or r.get(key) is None:
      continue
    if ft is not None and r["ft_steps"] != ft:
      continue
    masks, reruns = out.setdefault(r["seed"], ([], []))
    if r["method"] == "mask":
      masks.append(r[key])
      if r["name"].startswith("mask0-"):  # mask 0 with noise 0 is rerun 0 too
        reruns.append(r[key])
    else:
      reruns.append(r[key])
  return out


def _pooled(samples):
  """(pooled within-group variance, degrees of freedom) over groups of 2+ values."""
  ss = sum(float(np.sum((np.asarray(x) - np.mean(x)) ** 2)) for x in samples if len(x) > 1)
  dof = sum(len(x) - 1 for x in samples if len(x) > 1)
  return (ss / dof if dof else math.nan), dof


def variance_ratio(rows, key, ft=None, level=0.95):
  """dict(ratio, lo, hi, df_masks, df_reruns, sd_masks, sd_reruns) pooled over seeds."""
  g = groups(rows, key, ft)
  var_m, df_m = _pooled([m for m, _ in g.values()])
  var_r, df_r = _pooled([r for _, r in g.values()])
  if not (df_m and df_r) or var_r == 0:
    return dict(ratio=math.nan, lo=math.nan, hi=math.nan, df_masks=df_m, df_reruns=df_r,
                sd_masks=math.sqrt(var_m) if df_m else math.nan, sd_reruns=math.nan)
  ratio = var_m / var_r
  q = (1 - level) / 2
  lo = ratio / scipy_stats.f.ppf(1 - q, df_m, df_r)
  hi = ratio / scipy_stats.f.ppf(q, df_m, df_r)
  return dict(ratio=ratio, lo=lo, hi=hi, df_masks=df_m, df_reruns=df_r,
              sd_masks=math.sqrt(var_m), sd_reruns=math.sqrt(var_r))


def verdict(vr):
  if not math.isfinite(vr["ratio"]):
    return "not enough points"
  if vr["lo"] > 1:
    return "masks differ beyond fine-tuning noise"
  if vr["hi"] < 1:
    return "masks differ less than reruns (check the design)"
  return "within noise: masks do not differ beyond fine-tuning noise"


def table(rows, keys=JUDGED + ("mem_ratio", "test_nll")):
  lines = ["| outcome | var(masks) / var(reruns) | 95% interval | sd masks | sd reruns | "
           "df | verdict |", "|---|---|---|---|---|---|---|"]
  for k in keys:
    vr = variance_ratio(rows, k)
    if not math.isfinite(vr["ratio"]):
      continue
    lines.append(f"| {k} | {vr['ratio']:.3g} | [{vr['lo']:.3g}, {vr['hi']:.3g}] | "
                 f"{vr['sd_masks']:.3g} | {vr['sd_reruns']:.3g} | "
                 f"{vr['df_masks']}, {vr['df_reruns']} | {verdict(vr)} |")
  return "\n".join(lines)


def summarize(rows):
  return "\n".join(["### Headroom: masks against fine-tuning reruns", "",
                    "Within-seed variances pooled over seeds; the interval is the F "
                    "distribution's (95%). A ratio whose interval holds 1: the mask does not "
                    "matter beyond fine-tuning noise.", "", table(rows), ""])
