"""Does the gap tracker predict memorization? Its reading against mem_ratio on base runs.

The tracker (dit_jax.memorization) reads the model's losses on fixed probes while it
trains; the base runs of a sweep are evaluated at several steps, so each (seed, step)
pairs the tracker's reading with the memorization ratio of that step's samples.
"""
import numpy as np
from scipy import stats as scipy_stats

from dit_jax import report
from dit_jax.study import compare

KEYS = ("memo_ema/index", "memo_ema/gap")  # what the tracker reports, in order of use


def base_rows(rows, earlier, min_steps=3):
  """Base-run rows for the tracker comparison: a seed's whole series from this study
  where it evaluated its base run at `min_steps` steps or more, else from `earlier`;
  never a series mixed from two runs. Returns (rows, the seeds taken from `earlier`)."""
  def series(rs):
    out = {}
    for r in rs:
      if r["method"] == compare.BASE:
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


def _first_reach(steps, values, frac=0.5):
  """The first step where a series reaches `frac` of the way from its first to its
  largest value (None if it never rises)."""
  values = np.asarray(values, np.float64)
  lo, hi = values[0], values.max()
  if not hi > lo:
    return None
  return int(steps[int(np.argmax(values >= lo + frac * (hi - lo)))])


def against_memorization(rows, key=None):
  """Base runs only: per seed the tracker's reading and mem_ratio at each evaluated step,
  their correlation over all (seed, step) pairs, and which reaches half its rise first.

  `key` defaults to the memo index where the density is known (gmm), else the
  held-out minus training loss gap."""
  if key is None:
    key = next((k for k in KEYS if any(r.get(k) is not None for r in rows
                                               if r["method"] == compare.BASE)), KEYS[0])
  base = [r for r in rows if r["method"] == compare.BASE and r.get(key) is not None
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


def plot(track, path, title):
  """Per seed, mem_ratio and the tracker over training steps (one panel each: they are
  different quantities), then the one against the other at the same (seed, step)."""
  label = report.METRIC_LABELS.get(track["key"], track["key"])
  fig, (mem_ax, trk_ax, pair_ax) = report.new_figure(3, width=4.2)
  for seed, (steps, mem, trk) in track["per_seed"].items():
    line, = mem_ax.plot(steps, mem, "o-", label=f"seed {seed}")
    trk_ax.plot(steps, trk, "s-", color=line.get_color(), label=f"seed {seed}")
    pair_ax.plot(trk, mem, "o", color=line.get_color(), label=f"seed {seed}")
  mem_ax.set(xlabel="training step", ylabel="memorization ratio", ylim=(0, 1),
             title=title)
  trk_ax.set(xlabel="training step", ylabel=label, title="the tracker, same runs")
  if track["key"].endswith("/index"):  # the index's two landmarks: true score, memorizing
    for y in (0.0, 1.0):
      trk_ax.axhline(y, color="k", lw=0.5, ls="--")
  pair_ax.set(xlabel=label, ylabel="memorization ratio", ylim=(0, 1),
              title="the same (seed, step) pairs")
  mem_ax.legend(fontsize=7)
  return report.save_figure(fig, path)


def lines(track):
  """The correlation and who rises first, as markdown bullets."""
  if not track["per_seed"]:
    return ["- no base-run rows with the tracker's reading."]
  out = []
  if "pearson" in track:
    out.append(f"- over {track['n']} (seed, step) pairs, `{track['key']}` against mem_ratio: "
                 f"Pearson r = {track['pearson']:.3f}, Spearman rho = {track['spearman']:.3f}.")
  first_trk = sum(1 for _, t, m in track["crossings"] if t is not None and m is not None and t < m)
  same = sum(1 for _, t, m in track["crossings"] if t is not None and m is not None and t == m)
  later = sum(1 for _, t, m in track["crossings"] if t is not None and m is not None and t > m)
  cross = ", ".join(f"seed {s}: tracker {t}, mem_ratio {m}" for s, t, m in track["crossings"])
  out.append(f"- step where each first reaches half of its rise ({cross}): the tracker "
               f"first on {first_trk} seeds, the same evaluated step on {same}, later on "
               f"{later}.")
  return out
