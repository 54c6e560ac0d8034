"""docs/RESULTS.md from sweep workdirs: equal-budget tables, durability, the tracker.

Everything here reads the per-step rows sweeps write (sweep_steps.csv) and turns
them into markdown and figures; nothing is typed in by hand, so rerunning
scripts/results.py on the same workdirs gives the same file. A study is one
dataset's rows, possibly merged from several sweep workdirs (e.g. seeds run on
different cores), keyed by point name so a point present twice counts once.
"""
import math
import os

import matplotlib
import numpy as np
from scipy import stats as scipy_stats

from dit_jax import report
from dit_jax import stats
from dit_jax import sweep

BASE = "base"  # method name of the base runs (the tracker's rows)
TRACKER_KEYS = ("memo_ema/index", "memo_ema/gap")  # what the tracker reports, in order of use


def merge(row_lists):
  """One list of step rows from several sweeps; a (point, step) seen twice is kept once."""
  seen, out = set(), []
  for rows in row_lists:
    for r in rows:
      key = (r["name"], r["step"])
      if key not in seen:
        seen.add(key)
        out.append(r)
  return out


def load(paths):
  """Step rows from sweep workdirs (their sweep_steps.csv) or csv files, merged."""
  lists = []
  for p in paths:
    f = os.path.join(p, "sweep_steps.csv") if os.path.isdir(p) else p
    if not os.path.exists(f):
      raise FileNotFoundError(f"{f} does not exist; pass a sweep workdir that has run "
                              "(it writes sweep_steps.csv) or a sweep_steps csv.")
    lists.append(sweep.read_csv(f))
  return merge(lists)


def rerun_lines(rows, earlier, keys=("mem_ratio", "fd", "precision", "recall", "nll")):
  """How the (point, step) rows that an earlier run of the same points also measured
  compare with it: exact agreement, or the largest difference per metric. Earlier rows
  never enter the tables: points pair only with points of the same base run."""
  now = {(r["name"], r["step"]): r for r in rows}
  both = [(now[(r["name"], r["step"])], r) for r in earlier if (r["name"], r["step"]) in now]
  if not both:
    return []
  names = sorted({a["name"] for a, _ in both})
  gaps = {}
  for a, b in both:
    for k in keys:
      if a.get(k) is not None and b.get(k) is not None:
        gaps.setdefault(k, []).append(abs(a[k] - b[k]))
  head = (f"- measured by the earlier run too: {len(both)} (point, step) rows of "
          f"{', '.join(names)}")
  if all(max(g) == 0 for g in gaps.values()):
    return [head + "; every value agrees to every digit written."]
  return [head + "; largest |difference| " + ", ".join(
      f"{k} {max(g):.3g}" for k, g in gaps.items()) + " (the two runs differ in float "
      "rounding, so the earlier rows stay out of the tables)."]


def tracker_rows(rows, earlier, min_steps=3):
  """Base-run rows for the tracker comparison: a seed's whole series from this study
  where it evaluated its base run at `min_steps` steps or more, else from `earlier`;
  never a series mixed from two runs. Returns (rows, the seeds taken from `earlier`)."""
  def series(rs):
    out = {}
    for r in rs:
      if r["method"] == BASE:
        out.setdefault(r["seed"], []).append(r)
    return out
  now, before = series(rows), series(earlier)
  out, old = [], []
  for seed in sorted(set(now) | set(before)):
    mine = now.get(seed, [])
    if len(mine) >= min_steps or seed not in before:
      out += mine
    else:
      out += before[seed]
      old.append(seed)
  return out, old


def seeds_of(rows, method, budget=None):
  return sorted({r["seed"] for r in rows if r["method"] == method
                 and (budget is None or r["budget"] == budget)})


def _fmt_diff(iv, lower_is_better=True):
  return f"{stats.fmt_interval(*iv[:2])} ({stats.verdict(*iv[:2], lower_is_better)})"


def table(rows, ft, metrics):
  """Markdown table at fine-tuning step `ft`: every method at every budget, with the
  paired differences against the control and against random at the same budget."""
  recs = sweep.comparisons(rows, ft, metrics)
  metrics = [m for m in metrics if any(m in r for r in recs)]
  head = (["budget", "method", "seeds"] + metrics
          + ["mem_ratio vs control", "mem_ratio vs random", "fd vs control", "fd vs random"])
  lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
  for r in recs:
    n = max((r[m][2] for m in metrics if m in r), default=0)
    cells = [stats.fmt_interval(*r[m][:2]) if m in r else "-" for m in metrics]
    diffs = [_fmt_diff(r[k]) if k in r else "-"
             for k in ("mem_ratio-control", "mem_ratio-random", "fd-control", "fd-random")]
    lines.append("| " + " | ".join([str(r["budget"]), r["method"], str(n)] + cells + diffs)
                 + " |")
  return "\n".join(lines)


def verdicts(rows, ours, fts, budget):
  """Plain sentences on `ours` against random and against the control at each step."""
  out = []
  for ft in fts:
    recs = {(r["budget"], r["method"]): r for r in sweep.comparisons(rows, ft)}
    rec = recs.get((budget, ours))
    if rec is None:
      continue
    parts = []
    for key, label in (("mem_ratio-random", "mem_ratio vs random"),
                       ("mem_ratio-control", "mem_ratio vs the control"),
                       ("fd-random", "fd vs random"), ("fd-control", "fd vs the control"),
                       ("nll-control", "nll vs the control")):
      if key in rec:
        mean, half, n = rec[key]
        parts.append(f"{label} {stats.fmt_interval(mean, half)} "
                     f"({stats.verdict(mean, half)}, {n} seeds)")
    out.append(f"- after {ft} fine-tuning steps, `{ours}` at {budget}: " + "; ".join(parts))
  return out


def _first_reach(steps, values, frac=0.5):
  """The first step where a series reaches `frac` of the way from its first to its
  largest value (None if it never rises)."""
  values = np.asarray(values, np.float64)
  lo, hi = values[0], values.max()
  if not hi > lo:
    return None
  return int(steps[int(np.argmax(values >= lo + frac * (hi - lo)))])


def tracker_vs_memorization(rows, key=None):
  """Base runs only: per seed the tracker's reading and mem_ratio at each evaluated step,
  their correlation over all (seed, step) pairs, and which reaches half its rise first.

  `key` defaults to the memo index where the density is known (gmm), else the
  held-out minus training loss gap."""
  if key is None:
    key = next((k for k in TRACKER_KEYS if any(r.get(k) is not None for r in rows
                                               if r["method"] == BASE)), TRACKER_KEYS[0])
  base = [r for r in rows if r["method"] == BASE and r.get(key) is not None
          and r.get("mem_ratio") is not None]
  per_seed, crossings = {}, []
  for seed in sorted({r["seed"] for r in base}):
    rs = sorted((r for r in base if r["seed"] == seed), key=lambda r: r["step"])
    steps = [r["step"] for r in rs]
    mem, trk = [r["mem_ratio"] for r in rs], [r[key] for r in rs]
    per_seed[seed] = (steps, mem, trk)
    crossings.append((seed, _first_reach(steps, trk), _first_reach(steps, mem)))
  x = [v for s in per_seed.values() for v in s[2]]
  y = [v for s in per_seed.values() for v in s[1]]
  out = {"key": key, "per_seed": per_seed, "crossings": crossings, "n": len(x)}
  if len(x) >= 3 and np.std(x) > 0 and np.std(y) > 0:
    out["pearson"] = float(scipy_stats.pearsonr(x, y)[0])
    out["spearman"] = float(scipy_stats.spearmanr(x, y)[0])
  return out


def tracker_plot(track, path, title):
  fig, (ax1, ax2) = report.new_figure(2, width=4.5)
  for seed, (steps, mem, trk) in track["per_seed"].items():
    line, = ax1.plot(steps, mem, "o-", label=f"seed {seed}")
    ax1.plot(steps, trk, "s--", color=line.get_color())
    ax2.plot(trk, mem, "o", color=line.get_color(), label=f"seed {seed}")
  ax1.set(xlabel="training step", ylabel="mem_ratio (o-) / " + track["key"] + " (s--)",
          title=title)
  ax2.set(xlabel=track["key"], ylabel="mem_ratio", title="same points, paired")
  ax1.legend(fontsize=7)
  return report.save_figure(fig, path)


def tracker_lines(track):
  if not track["per_seed"]:
    return ["- no base-run rows with the tracker's reading."]
  lines = []
  if "pearson" in track:
    lines.append(f"- over {track['n']} (seed, step) pairs, `{track['key']}` against mem_ratio: "
                 f"Pearson r = {track['pearson']:.3f}, Spearman rho = {track['spearman']:.3f}.")
  first_trk = sum(1 for _, t, m in track["crossings"] if t is not None and m is not None and t < m)
  same = sum(1 for _, t, m in track["crossings"] if t is not None and m is not None and t == m)
  later = sum(1 for _, t, m in track["crossings"] if t is not None and m is not None and t > m)
  cross = ", ".join(f"seed {s}: tracker {t}, mem_ratio {m}" for s, t, m in track["crossings"])
  lines.append(f"- step where each first reaches half of its rise ({cross}): the tracker "
               f"first on {first_trk} seeds, the same evaluated step on {same}, later on "
               f"{later}.")
  return lines


def ideas_table(rows, method_order=None):
  """One seed's exploration: mem_ratio and fd per method at each fine-tuning step."""
  pts = [r for r in rows if r["method"] != BASE and r["ft_steps"] >= 0]
  fts = sorted({r["ft_steps"] for r in pts})
  methods = method_order or list(dict.fromkeys(r["method"] for r in pts))
  head = ["method", "budget", "seed"] + [f"mem / fd at +{f}" for f in fts]
  lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
  for m in methods:
    rs = {r["ft_steps"]: r for r in pts if r["method"] == m}
    if not rs:
      continue
    any_r = next(iter(rs.values()))
    cells = []
    for f in fts:
      r = rs.get(f)
      cells.append("-" if r is None or r.get("mem_ratio") is None
                   else f"{r['mem_ratio']:.3f} / {_num(r.get('fd'))}")
    lines.append("| " + " | ".join([m, str(any_r["budget"]), str(any_r["seed"])] + cells)
                 + " |")
  return "\n".join(lines)


def _num(v):
  return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.1f}"


def counts(rows):
  """'method@budget: seeds' for every point group, for the record."""
  groups = {}
  for r in rows:
    groups.setdefault((r["method"], r["budget"]), set()).add(r["seed"])
  return ", ".join(f"{m}@{b}: {len(s)} seeds ({'+'.join(map(str, sorted(s)))})"
                   for (m, b), s in groups.items())


def write_csv(rows, path):
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  sweep.write_csv(rows, path, sweep.STEP_COLUMNS)
  return path


def target_line(rows, ours, budget, fts, rivals=("random", "head_grad")):
  """Whether the issue's target holds: at every step in fts, `ours` memorizes less than
  each rival with the paired interval excluding zero, and its fd (nll where measured)
  mean lies inside the control's interval."""
  misses, checked = [], []
  for ft in fts:
    recs = {(r["budget"], r["method"]): r for r in sweep.comparisons(rows, ft)}
    rec = recs.get((budget, ours))
    control = next((r for (b, m), r in recs.items() if m == sweep.CONTROL), None)
    if rec is None or control is None:
      misses.append(f"no `{ours}` or control rows at +{ft}")
      continue
    for rival in rivals:
      other = sweep._by_seed(rows, rival, budget, ft, "mem_ratio")
      if len(other) < 2:
        misses.append(f"`{rival}` has {len(other)} seed(s) at {budget} +{ft}")
        continue
      mean, half, _ = stats.paired(sweep._by_seed(rows, ours, budget, ft, "mem_ratio"), other)
      checked.append(f"vs {rival} +{ft}")
      if not (math.isfinite(half) and mean + half < 0):
        misses.append(f"mem_ratio vs {rival} at +{ft}: {stats.fmt_interval(mean, half)}")
    for key in ("fd", "nll"):
      if key in rec and key in control:
        mean, half, _ = control[key]
        if math.isfinite(half) and abs(rec[key][0] - mean) > half:
          misses.append(f"{key} at +{ft}: {rec[key][0]:.3g} outside the control's "
                        f"{stats.fmt_interval(mean, half)}")
  if not misses:
    return (f"**Target met** ({', '.join(checked)}): lower memorization than each rival with "
            "the interval excluding zero, quality inside the control's interval.")
  return "**Target not met**: " + "; ".join(misses) + "."



# the capacity grid (configs/sweeps/capacity_grid.py): budget "n<N>", method "w<width>"
EXCESS = "memo_ema/gt_excess"
HELDOUT = "memo_ema/heldout_loss"


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
  the full width's: the ground-truth capacity W*(tol) when n stands in for the density."""
  n = n or max(c[0] for c in cells)
  widths = sorted(w for m, w in cells if m == n and key in cells[(m, w)])
  if not widths:
    return None
  full = cells[(n, max(widths))][key]
  return min(w for w in widths if cells[(n, w)][key] <= (1 + tol) * full)


def grid_table(cells, key, digits=3):
  ns = sorted({n for n, _ in cells})
  widths = sorted({w for _, w in cells}, reverse=True)
  lines = ["| n \\ width | " + " | ".join(f"{w:g}" for w in widths) + " |",
           "|---" * (len(widths) + 1) + "|"]
  for n in ns:
    vals = [cells.get((n, w), {}).get(key) for w in widths]
    lines.append(f"| {n} | " + " | ".join("-" if v is None else f"{v:.{digits}g}"
                                            for v in vals) + " |")
  return "\n".join(lines)


def memorization_onset(cells, level=0.1):
  """Per n, the smallest width whose mem_ratio reaches `level` (None: no width does)."""
  out = {}
  for n in sorted({n for n, _ in cells}):
    ws = [w for m, w in cells if m == n and cells[(m, w)].get("mem_ratio", 0) >= level]
    out[n] = min(ws) if ws else None
  return out


def grid_plot(cells, path, title, key=EXCESS, label="held-out excess over gt_loss"):
  """mem_ratio and `key` (the oracle's: the held-out excess over the true score's loss
  where the density is known, else the held-out loss) over (width, n); then the excess
  per t-bucket at the largest n where the grid has it, else `key` over width per n."""
  ns = sorted({n for n, _ in cells})
  widths = sorted({w for _, w in cells})
  fig, axes = report.new_figure(3, width=4.2)
  for ax, k, lab, norm in ((axes[0], "mem_ratio", "mem_ratio", None),
                           (axes[1], key, f"{label} (log)", matplotlib.colors.LogNorm())):
    grid = np.array([[cells.get((n, w), {}).get(k, np.nan) for w in widths] for n in ns])
    im = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis", norm=norm)
    ax.set_xticks(range(len(widths)), [f"{w:g}" for w in widths])
    ax.set_yticks(range(len(ns)), [str(n) for n in ns])
    ax.set(xlabel="width (fraction of tiny's heads and MLP units)", ylabel="n", title=lab)
    for i in range(len(ns)):
      for j in range(len(widths)):
        if np.isfinite(grid[i, j]):
          ax.text(j, i, f"{grid[i, j]:.2g}", ha="center", va="center", fontsize=7, color="w")
    fig.colorbar(im, ax=ax)
  top = max(ns)
  buckets = {w: sorted((int(k.rsplit("_t", 1)[1]), v) for k, v in cells.get((top, w), {}).items()
                       if k.startswith(EXCESS + "_t")) for w in widths}
  if any(buckets.values()):
    for w, ts in buckets.items():
      if ts:
        axes[2].plot([b for b, _ in ts], [v for _, v in ts], "o-", label=f"width {w:g}")
    axes[2].set(xlabel="t-bucket (small t first)", ylabel="excess over gt_loss",
                title=f"{title}: n = {top}", yscale="log")
  else:
    for n in ns:  # relative to the full width's, so that every n shows on one axis
      ws = [w for w in widths if key in cells.get((n, w), {})]
      full = cells[(n, max(ws))][key]
      axes[2].plot(ws, [cells[(n, w)][key] / full for w in ws], "o-", label=f"n = {n}")
    axes[2].axhline(1.0, color="k", lw=0.5)
    axes[2].set(xlabel="width", ylabel="over the full width's", xscale="log",
                title=f"{title}: {label}")
    axes[2].set_xticks(widths, [f"{w:g}" for w in widths])
    axes[2].minorticks_off()
  axes[2].legend(fontsize=7)
  return report.save_figure(fig, path)


def nearest_width(fraction, widths):
  """The grid width closest to a kept fraction of units (ties to the wider)."""
  return min(sorted(widths, reverse=True), key=lambda w: abs(w - fraction))


def search_lines(points, widths, target):
  """Per capacity point: the kept fraction of heads and of MLP units, the grid width each
  is nearest, and how many grid steps that is from `target` (W*)."""
  order = sorted(widths, reverse=True)
  units = lambda r, k: [int(v) for v in str(r[k]).split("+")]
  full = {p["seed"]: p for p in points if p["method"] == sweep.CONTROL}
  out = []
  for r in sorted((p for p in points if p["method"] == "capacity"), key=lambda p: p["seed"]):
    heads, mlp = units(r, "heads"), units(r, "mlp")
    kh = sum(heads) / sum(units(full[r["seed"]], "heads"))
    km = sum(mlp) / sum(units(full[r["seed"]], "mlp"))
    steps = [abs(order.index(nearest_width(k, order)) - order.index(target)) for k in (kh, km)]
    out.append(dict(seed=r["seed"], heads=heads, mlp=mlp, kept_heads=kh, kept_mlp=km,
                    steps_heads=steps[0], steps_mlp=steps[1]))
  return out


def capacity_verdict(rows, found, ft, budget="cap", quality=("nll", "fd", "precision"),
                     star="W*"):
  """The issue's target for the capacity search, in sentences: within one grid step of
  W* (each axis), mem_ratio below the control's (paired interval below zero), quality
  (nll where measured, else fd) inside the control's interval; and how each compares
  with random at the same width."""
  out = []
  if found:
    near = sum(1 for f in found if max(f["steps_heads"], f["steps_mlp"]) <= 1)
    out.append(f"- width: {near} of {len(found)} seeds within one grid step of {star} on both "
               "axes (" + ", ".join(f"seed {f['seed']}: {f['steps_heads']} / {f['steps_mlp']}"
                                    for f in found) + " steps, heads / MLP).")
  recs = {(r["budget"], r["method"]): r for r in sweep.comparisons(rows, ft)}
  rec = recs.get((budget, "capacity"))
  control = next((r for (b, m), r in recs.items() if m == sweep.CONTROL), None)
  if rec is None or control is None:
    return out + [f"- no capacity or control rows at +{ft}."]
  for key in ("mem_ratio",) + tuple(quality):
    better = sweep.LOWER_IS_BETTER[key]
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
