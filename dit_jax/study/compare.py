"""Methods compared at equal budget over seeds: intervals, the table, verdicts, durability.

Rows are a sweep's per-step rows (sweepdir.STEP_COLUMNS). Points pair by seed: each
seed has its own training subset and base run, shared by every method, so a method's
difference from another is the paired per-seed difference and its Student-t interval.
"""
import math
import re

import numpy as np

from dit_jax import report
from dit_jax.study import stats

BASE = "base"  # method name of the base runs (the tracker's rows)
CONTROL = "original"  # the method name of the equally fine-tuned, unpruned control
REFERENCE = "random"  # the baseline every method is compared with at its budget
QUALITY = ("mem_ratio", "fd", "fid", "nll", "precision", "recall")  # absent ones are left out
LOWER_IS_BETTER = {"mem_ratio": True, "fd": True, "fid": True, "precision": False,
                   "recall": False,
                   # the samples' NLL under the known density has no better side: fresh
                   # draws score the density's entropy, and samples piled on the modes (a
                   # memorizing model's) score below it; nll_excess = |nll - H| judges
                   "nll": None,
                   # the model's likelihood: lower test_nll is better quality; a smaller
                   # nll_gap (test - train) is less memorization
                   "test_nll": True, "nll_gap": True,
                   # samples against a known density: 0 is a perfect model for both, and
                   # piling samples on the modes (memorization) raises them
                   "nll_excess": True, "energy_distance": True}
# the paired differences a table shows, after its metrics
DIFFS = ("mem_ratio-control", "mem_ratio-random", "fd-control", "fd-random")


def by_seed(rows, method, budget, ft, key):
  """{seed: value of `key`} for one method at one budget and fine-tuning step."""
  return {r["seed"]: r.get(key) for r in rows
          if r["method"] == method and r["budget"] == budget and r["ft_steps"] == ft}


def comparisons(rows, ft, metrics=QUALITY):
  """At fine-tuning step `ft`: per budget and method, each metric's interval over seeds
  and its paired differences against the control and against random at that budget."""
  out = []
  control = [r for r in rows if r["method"] == CONTROL and r["ft_steps"] == ft]
  control_budget = control[0]["budget"] if control else None
  budgets = list(dict.fromkeys(r["budget"] for r in rows if r["ft_steps"] == ft
                               and r["method"] != CONTROL and r["budget"] != BASE))
  for budget in [control_budget] * bool(control) + budgets:
    methods = list(dict.fromkeys(r["method"] for r in rows
                                 if r["budget"] == budget and r["ft_steps"] == ft))
    for m in methods:
      rec = {"budget": budget, "method": m, "ft_steps": ft}
      for key in metrics:
        vals = by_seed(rows, m, budget, ft, key)
        if not any(v is not None for v in vals.values()):
          continue
        rec[key] = stats.t_interval(vals.values())
        if m != CONTROL and control:
          rec[f"{key}-control"] = stats.paired(vals, by_seed(rows, CONTROL, control_budget,
                                                             ft, key))
        if m != REFERENCE and budget != control_budget:
          ref = by_seed(rows, REFERENCE, budget, ft, key)
          if ref:
            rec[f"{key}-random"] = stats.paired(vals, ref)
      out.append(rec)
  return out


def markdown(head, body):
  """A markdown table: a header row and rows of cells (anything str() can print)."""
  lines = ["| " + " | ".join(map(str, head)) + " |", "|---" * len(head) + "|"]
  return "\n".join(lines + ["| " + " | ".join(map(str, cells)) + " |" for cells in body])


def _diff(iv, key):
  return (f"{stats.fmt_interval(*iv[:2])} "
          f"({stats.verdict(*iv[:2], LOWER_IS_BETTER[key.split('-')[0]])})")


def table(rows, ft, metrics):
  """The comparison table at fine-tuning step `ft`: every method at every budget, with
  the paired differences against the control and against random at the same budget."""
  recs = comparisons(rows, ft, metrics)
  metrics = [m for m in metrics if any(m in r for r in recs)]
  head = ["budget", "method", "seeds"] + metrics + [d.replace("-", " vs ") for d in DIFFS]
  body = []
  for r in recs:
    n = max((r[m][2] for m in metrics if m in r), default=0)
    body.append([r["budget"], r["method"], n]
                + [stats.fmt_interval(*r[m][:2]) if m in r else "-" for m in metrics]
                + [_diff(r[k], k) if k in r else "-" for k in DIFFS])
  return markdown(head, body)


def summarize(rows, metrics=QUALITY):
  """Markdown: the comparison table at each evaluated fine-tuning step."""
  fts = sorted({r["ft_steps"] for r in rows if r["budget"] != BASE and r["ft_steps"] > 0})
  lines = []
  for ft in fts:
    if comparisons(rows, ft, metrics):
      lines += [f"### {ft} fine-tuning steps", "",
                "mean ± 95% t-interval over seeds; `vs control` and `vs random`: the paired "
                "per-seed difference (method minus the other) and its 95% interval.", "",
                table(rows, ft, metrics), ""]
  return "\n".join(lines)


def verdicts(rows, ours, fts, budget):
  """Plain sentences on `ours` against random and against the control at each step."""
  out = []
  for ft in fts:
    recs = {(r["budget"], r["method"]): r for r in comparisons(rows, ft)}
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
        better = LOWER_IS_BETTER[key.split("-")[0]]
        parts.append(f"{label} {stats.fmt_interval(mean, half)} "
                     f"({stats.verdict(mean, half, better)}, {n} seeds)")
    out.append(f"- after {ft} fine-tuning steps, `{ours}` at {budget}: " + "; ".join(parts))
  return out


def target_line(rows, ours, budget, fts, rivals=("random", "head_grad")):
  """Whether the target holds: at every step in fts, `ours` memorizes less than each
  rival with the paired interval excluding zero, and its fd (nll where measured) mean
  lies inside the control's interval: a two-sided closeness to the control, which
  assumes no better side (for nll there is none; see LOWER_IS_BETTER)."""
  misses, checked = [], []
  for ft in fts:
    recs = {(r["budget"], r["method"]): r for r in comparisons(rows, ft)}
    rec = recs.get((budget, ours))
    control = next((r for (b, m), r in recs.items() if m == CONTROL), None)
    if rec is None or control is None:
      misses.append(f"no `{ours}` or control rows at +{ft}")
      continue
    for rival in rivals:
      other = by_seed(rows, rival, budget, ft, "mem_ratio")
      if len(other) < 2:
        misses.append(f"`{rival}` has {len(other)} seed(s) at {budget} +{ft}")
        continue
      mean, half, _ = stats.paired(by_seed(rows, ours, budget, ft, "mem_ratio"), other)
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


def counts(rows):
  """'method@budget: seeds' for every point group, for the record."""
  groups = {}
  for r in rows:
    groups.setdefault((r["method"], r["budget"]), set()).add(r["seed"])
  return ", ".join(f"{m}@{b}: {len(s)} seeds ({'+'.join(map(str, sorted(s)))})"
                   for (m, b), s in groups.items())


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


def _num(v):
  return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.1f}"


def ideas_table(rows, method_order=None):
  """One seed's exploration: mem_ratio and fd per method at each fine-tuning step."""
  pts = [r for r in rows if r["method"] != BASE and r["ft_steps"] >= 0]
  fts = sorted({r["ft_steps"] for r in pts})
  body = []
  for m in method_order or list(dict.fromkeys(r["method"] for r in pts)):
    rs = {r["ft_steps"]: r for r in pts if r["method"] == m}
    if rs:
      any_r = next(iter(rs.values()))
      body.append([m, any_r["budget"], any_r["seed"]] + [
          "-" if rs.get(f) is None or rs[f].get("mem_ratio") is None
          else f"{rs[f]['mem_ratio']:.3f} / {_num(rs[f].get('fd'))}" for f in fts])
  return markdown(["method", "budget", "seed"] + [f"mem / fd at +{f}" for f in fts], body)


def budget_label(budget):
  """A budget code in words: 'h20m50' -> '20% of heads + 50% of MLP units removed'."""
  if budget == "cap":
    return "the width the capacity search chose"
  m = re.fullmatch(r"h(\d+)(?:m(\d+))?", str(budget))
  if m is None:
    return str(budget)
  cut = [f"{m.group(1)}% of heads"] + ([f"{m.group(2)}% of MLP units"] if m.group(2) else [])
  return " + ".join(cut) + " removed"


def method_label(method):
  return "control (nothing removed)" if method == CONTROL else method


def durability_plot(rows, path):
  """mem_ratio against fine-tuning steps (0: just pruned), one panel per budget, each
  method's mean over seeds with a 95% bootstrap interval (bounded like the ratio); a
  series with one seed is drawn hollow and dotted, and says so in the legend."""
  budgets = list(dict.fromkeys(r["budget"] for r in rows
                               if r["budget"] != BASE and r["method"] != CONTROL))
  # one colour per method across panels, the control's first
  colors = {m: f"C{i}" for i, m in enumerate(dict.fromkeys(
      [CONTROL] + [r["method"] for r in rows if r["budget"] != BASE]))}
  fig, axes = report.new_figure(max(1, len(budgets)), width=4.8)
  for ax, budget in zip(axes, budgets or [None]):
    methods = list(dict.fromkeys(r["method"] for r in rows
                                 if r["budget"] == budget or r["method"] == CONTROL))
    for m in methods:
      rs = [r for r in rows if r["method"] == m and (r["budget"] == budget or m == CONTROL)
            and r["ft_steps"] >= 0 and r.get("mem_ratio") is not None]
      fts = sorted({r["ft_steps"] for r in rs})
      if not fts:
        continue
      iv = np.array([stats.bootstrap_interval([r["mem_ratio"] for r in rs
                                               if r["ft_steps"] == f]) for f in fts])
      one = iv[:, 3].max() == 1
      ax.errorbar(fts, iv[:, 0], yerr=[iv[:, 0] - iv[:, 1], iv[:, 2] - iv[:, 0]],
                  marker="o", capsize=3, ls=":" if one else "-", mfc="none" if one else None,
                  color=colors[m],
                  label=method_label(m) + (" (1 seed)" if one else f" ({int(iv[:, 3].min())} "
                                           "seeds)"))
    ax.set(xlabel="fine-tuning steps after the prune (0: just pruned)",
           ylabel="memorization ratio (mean, 95% bootstrap)", ylim=(0, 1),
           title=budget_label(budget))
    ax.legend(fontsize=7)
  return report.save_figure(fig, path)
