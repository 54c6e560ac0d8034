"""The capacity the ground-truth score needs: the width x n grid, W*, and the search.

The grid (configs/sweeps/capacity_grid.py) names its points budget "n<N>" and method
"w<width>"; a cell is (n, width). W*(tol) is read off the largest n, standing in for the
density; the capacity search (method "capacity", budget "cap") is judged against it.
"""
import math

import matplotlib
import numpy as np
from scipy import stats as scipy_stats

from dit_jax import report
from dit_jax.study import compare
from dit_jax.study import stats

EXCESS = "memo_ema/gt_excess"  # the oracle's reading where the density is known
HELDOUT = "memo_ema/heldout_loss"  # the proxy's elsewhere


def grid_cells(rows, keys=("mem_ratio", "nll", "fd", "precision", "recall", HELDOUT, EXCESS,
                           "memo_ema/index")):
  """{(n, width): {key: mean over seeds}} at each cell's last evaluated step."""
  last = {}
  for r in rows:
    b, m = str(r["budget"]), str(r["method"])
    if not (b.startswith("n") and m.startswith("w")):
      continue
    cell = (int(b[1:]), float(m[1:]))
    prev = last.get((cell, r["seed"]))
    if prev is None or r["step"] > prev["step"]:
      last[(cell, r["seed"])] = r
  cells = {}
  for (cell, _), r in last.items():
    cells.setdefault(cell, []).append(r)
  per_bucket = sorted(k for k in (last and next(iter(last.values()))) or {}
                      if k.startswith(EXCESS + "_t"))
  out = {}
  for cell, rs in cells.items():
    out[cell] = {k: float(np.mean([r[k] for r in rs])) for k in list(keys) + per_bucket
                 if all(r.get(k) is not None for r in rs)}
    out[cell]["seeds"] = len(rs)
  return out


def w_star(cells, tol, key=EXCESS, n=None):
  """The smallest width at n (default: the largest) whose `key` is within (1 + tol) of
  the widest width's: the ground-truth capacity W*(tol) when n stands in for the density."""
  n = n or max(c[0] for c in cells)
  widths = sorted(w for m, w in cells if m == n and key in cells[(m, w)])
  if not widths:
    return None
  full = cells[(n, max(widths))][key]
  return min(w for w in widths if cells[(n, w)][key] <= (1 + tol) * full)


def grid_table(cells, key, digits=3):
  """`key` per cell: n down the rows, width across (widest first)."""
  widths = sorted({w for _, w in cells}, reverse=True)
  body = [[n] + ["-" if v is None else f"{v:.{digits}g}"
                 for v in (cells.get((n, w), {}).get(key) for w in widths)]
          for n in sorted({n for n, _ in cells})]
  return compare.markdown(["n \\ width"] + [f"{w:g}" for w in widths], body)


def memorization_onset(cells, level=0.1):
  """Per n, the smallest width whose mem_ratio reaches `level` (None: no width does)."""
  out = {}
  for n in sorted({n for n, _ in cells}):
    ws = [w for m, w in cells if m == n and cells[(m, w)].get("mem_ratio", 0) >= level]
    out[n] = min(ws) if ws else None
  return out


def grid_plot(cells, path, title, key=EXCESS,
              label="held-out excess over the true score's loss"):
  """mem_ratio and `key` (the oracle's: the held-out excess over the true score's loss
  where the density is known, else the held-out loss) over (width, n); then the excess
  per t-bucket at the largest n where the grid has it, else `key` over width per n."""
  ns = sorted({n for n, _ in cells})
  widths = sorted({w for _, w in cells})
  fig, axes = report.new_figure(3, width=4.2)
  for ax, k, lab, norm in ((axes[0], "mem_ratio", "memorization ratio", None),
                           (axes[1], key, f"{label} (log)", matplotlib.colors.LogNorm())):
    grid = np.array([[cells.get((n, w), {}).get(k, np.nan) for w in widths] for n in ns])
    im = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis", norm=norm)
    ax.set_xticks(range(len(widths)), [f"{w:g}" for w in widths])
    ax.set_yticks(range(len(ns)), [str(n) for n in ns])
    ax.set(xlabel="width (fraction of tiny's heads and MLP units)", ylabel="n", title=lab)
    for i in range(len(ns)):
      for j in range(len(widths)):
        if np.isfinite(grid[i, j]):  # dark text on viridis' bright (yellow, green) end
          bright = im.norm(grid[i, j]) > 0.6
          ax.text(j, i, f"{grid[i, j]:.2g}", ha="center", va="center", fontsize=7,
                  color="k" if bright else "w")
    fig.colorbar(im, ax=ax)
  top = max(ns)
  buckets = {w: sorted((int(k.rsplit("_t", 1)[1]), v) for k, v in cells.get((top, w), {}).items()
                       if k.startswith(EXCESS + "_t")) for w in widths}
  if any(buckets.values()):
    for w, ts in buckets.items():
      if ts:  # bucket b holds t/T in [b/B, (b+1)/B): drawn at its centre
        axes[2].plot([(b + 0.5) / len(ts) for b, _ in ts], [v for _, v in ts], "o-",
                     label=f"width {w:g}")
    axes[2].set(xlabel="noise level t / T (bucket centres)",
                ylabel="held-out excess over the true score's loss",
                title=f"{title}: n = {top}, by noise level", yscale="log", xlim=(0, 1))
  else:
    for n in ns:  # relative to the full width's, so that every n shows on one axis
      ws = [w for w in widths if key in cells.get((n, w), {})]
      full = cells[(n, max(ws))][key]
      axes[2].plot(ws, [cells[(n, w)][key] / full for w in ws], "o-", label=f"n = {n}")
    axes[2].axhline(1.0, color="k", lw=0.5)
    axes[2].set(xlabel="width", ylabel=f"{label} / the widest width's", xscale="log",
                title=f"{title}: {label}")
    axes[2].set_xticks(widths, [f"{w:g}" for w in widths])
    axes[2].minorticks_off()
  axes[2].legend(fontsize=7)
  return report.save_figure(fig, path)


def nearest_width(fraction, widths):
  """The grid width closest to a kept fraction of units (ties to the wider)."""
  return min(sorted(widths, reverse=True), key=lambda w: abs(w - fraction))


def best_width_per_seed(rows, n, key=EXCESS):
  """{seed: the grid width whose `key` is lowest at n}, each cell read at its last
  evaluated step: the width that generalizes best from that seed's n images."""
  last = {}
  for r in rows:
    b, m = str(r["budget"]), str(r["method"])
    if b != f"n{n}" or not m.startswith("w") or r.get(key) is None:
      continue
    cell = (r["seed"], float(m[1:]))
    if cell not in last or r["step"] > last[cell]["step"]:
      last[cell] = r
  best = {}
  for (seed, w), r in sorted(last.items()):
    if seed not in best or r[key] < last[(seed, best[seed])][key]:
      best[seed] = w
  return best


def search_lines(points, widths, target):
  """Per capacity point: the kept fraction of heads and of MLP units, the grid width each
  is nearest, and how many grid steps that is from `target` (W*, or {seed: width})."""
  order = sorted(widths, reverse=True)
  units = lambda r, k: [int(v) for v in str(r[k]).split("+")]
  full = {p["seed"]: p for p in points if p["method"] == compare.CONTROL}
  out = []
  for r in sorted((p for p in points if p["method"] == "capacity"), key=lambda p: p["seed"]):
    goal = target.get(r["seed"]) if isinstance(target, dict) else target
    if goal is None:
      continue
    heads, mlp = units(r, "heads"), units(r, "mlp")
    kh = sum(heads) / sum(units(full[r["seed"]], "heads"))
    km = sum(mlp) / sum(units(full[r["seed"]], "mlp"))
    steps = [abs(order.index(nearest_width(k, order)) - order.index(goal)) for k in (kh, km)]
    out.append(dict(seed=r["seed"], heads=heads, mlp=mlp, kept_heads=kh, kept_mlp=km,
                    target=goal, steps_heads=steps[0], steps_mlp=steps[1]))
  return out


def verdict(rows, found, ft, budget="cap", quality=("nll", "fd", "precision"), star="W*"):
  """The capacity search's target, in sentences: within one grid step of
  W* (each axis), mem_ratio below the control's (paired interval below zero), quality
  (nll where measured, else fd) inside the control's interval; and how each compares
  with random at the same width."""
  out = []
  if found:
    near = sum(1 for f in found if max(f["steps_heads"], f["steps_mlp"]) <= 1)
    out.append(f"- width: {near} of {len(found)} seeds within one grid step of {star} on both "
               "axes (" + ", ".join(f"seed {f['seed']}: {f['steps_heads']} / {f['steps_mlp']}"
                                    for f in found) + " steps, heads / MLP).")
  recs = {(r["budget"], r["method"]): r for r in compare.comparisons(rows, ft)}
  rec = recs.get((budget, "capacity"))
  control = next((r for (b, m), r in recs.items() if m == compare.CONTROL), None)
  if rec is None or control is None:
    return out + [f"- no capacity or control rows at +{ft}."]
  for key in ("mem_ratio",) + tuple(quality):
    better = compare.LOWER_IS_BETTER[key]
    for other, label in (("control", "the control"), ("random", "random at the same width")):
      if f"{key}-{other}" in rec:
        mean, half, n = rec[f"{key}-{other}"]
        out.append(f"- {key} vs {label}: {stats.fmt_interval(mean, half)} "
                   f"({stats.verdict(mean, half, better)}, {n} seeds).")
  misses = []
  if found and any(max(f["steps_heads"], f["steps_mlp"]) > 1 for f in found):
    misses.append(f"width more than one grid step from {star} on some seed")
  mean, half, _ = rec.get("mem_ratio-control", (math.nan, math.nan, 0))
  if not (math.isfinite(half) and mean + half < 0):
    misses.append("mem_ratio not below the control's with the interval excluding zero")
  judge = next((k for k in quality if k in rec and k in control), None)
  if judge:
    c_mean, c_half, _ = control[judge]
    if not (math.isfinite(c_half) and abs(rec[judge][0] - c_mean) <= c_half):
      misses.append(f"{judge} {rec[judge][0]:.3g} outside the control's "
                    f"{stats.fmt_interval(c_mean, c_half)}")
  out.append("**Target met**." if not misses else "**Target not met**: " + "; ".join(misses) + ".")
  return out


def judge_at_n(rows, found, ft, key=EXCESS, budget="cap"):
  """The search against each seed's own best width at its n, in sentences: how many
  seeds land within one grid step on both axes (exact binomial interval), and the
  chosen model's `key` minus the unpruned control's at +ft (paired over seeds).
  Met: every seed within one step, and the difference not above zero."""
  near = sum(1 for f in found if max(f["steps_heads"], f["steps_mlp"]) <= 1)
  out, misses = [], []
  if found:
    ci = scipy_stats.binomtest(near, len(found)).proportion_ci(0.95, method="exact")
    out.append(f"- width: {near} of {len(found)} seeds within one grid step of their "
               f"target on both axes (95% interval of the proportion [{ci.low:.2f}, "
               f"{ci.high:.2f}]).")
    if near < len(found):
      misses.append(f"{len(found) - near} seed(s) more than one grid step away")
  else:
    misses.append("no capacity points")
  recs = {(r["budget"], r["method"]): r for r in compare.comparisons(rows, ft, (key,))}
  diff = recs.get((budget, "capacity"), {}).get(f"{key}-control")
  if diff is None:
    misses.append(f"no {key} of the chosen model and the control at +{ft}")
  else:
    mean, half, n = diff
    out.append(f"- {key} at +{ft}, chosen model minus the control: "
               f"{stats.fmt_interval(mean, half)} ({stats.verdict(mean, half)}, {n} seeds).")
    if not (math.isfinite(half) and mean - half <= 0):
      misses.append(f"{key} above the control's, or no interval")
  out.append("**Target met**." if not misses else "**Target not met**: " + "; ".join(misses) + ".")
  return out
