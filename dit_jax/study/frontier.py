"""The memorization-quality frontier: is an intervention better than stopping earlier?

Rows are a frontier sweep's per-step rows (configs/sweeps/frontier.py). The
early_stop family's checkpoints trace, per seed, memorization against quality as
training goes on. A point of another family (a pruned model after ft steps, a
decayed or narrower model at some step) is compared with early stopping *at its
own quality*: the early_stop curve is read, per seed, at the first step where it
reaches the point's quality (linear between evaluated steps; the earliest step
is where stopping costs least memorization), and the paired per-seed
difference in memorization gets a 95% Student-t interval. A point of better
quality than any early_stop checkpoint has no match; it is counted, not paired.

Two stopping rules a user can run without the test split, read off early_stop:
  val_stop      the checkpoint with the lowest held-out denoising loss on the
                select split (memo_ema/heldout_loss): plain validation stopping;
  tracker_stop  the first checkpoint whose tracker reading crosses a fixed
                threshold (memo_ema/index on a known density, else memo_ema/gap
                relative to the held-out loss), thresholds fixed in PLAN.md.
"""
import itertools
import math

import numpy as np

from dit_jax.study import stats

EARLY = "early_stop"
QUALITY = "test_nll"  # lower is better; copying the training set cannot lower it
MEMORIZATION = ("mem_ratio", "nll_gap")


def _num(v):
  return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def series(rows, method, seed):
  """One point's rows of a seed, by step, with the fields a comparison reads."""
  out = [r for r in rows if r["method"] == method and r["seed"] == seed]
  return sorted(out, key=lambda r: r["step"])


def seeds(rows, method=EARLY):
  return sorted({r["seed"] for r in rows if r["method"] == method})


def early_stop_at(curve, quality, mkey, qkey=QUALITY):
  """Memorization of early stopping at the first step whose quality reaches `quality`
  (linear between evaluated steps), or None if no checkpoint is that good."""
  pts = [(r[qkey], r[mkey]) for r in curve if _num(r.get(qkey)) and _num(r.get(mkey))]
  for i, (q, m) in enumerate(pts):
    if q <= quality:
      if i == 0:
        return m
      q_prev, m_prev = pts[i - 1]
      w = (q_prev - quality) / (q_prev - q)  # q_prev > quality >= q
      return m_prev + w * (m - m_prev)
  return None


def dominance(rows, pick, mkey, qkey=QUALITY):
  """Paired memorization minus early stopping's at the same quality, over seeds.

  pick(seed) -> the row of the compared point for that seed (or None). Returns
  dict(mean, half, n, unmatched, quality): the t-interval of the differences,
  the seeds whose point beat every early_stop checkpoint's quality, and the
  point's mean quality.
  """
  diffs, unmatched, quals = [], 0, []
  for seed in seeds(rows):
    row = pick(seed)
    if row is None or not (_num(row.get(qkey)) and _num(row.get(mkey))):
      continue
    quals.append(row[qkey])
    ref = early_stop_at(series(rows, EARLY, seed), row[qkey], mkey, qkey)
    if ref is None:
      unmatched += 1
    else:
      diffs.append(row[mkey] - ref)
  mean, half, n = stats.t_interval(diffs)
  return dict(mean=mean, half=half, n=n, unmatched=unmatched,
              quality=float(np.mean(quals)) if quals else math.nan)


def at_ft(rows, method, ft):
  """pick(seed) for a pruned family `ft` fine-tuning steps after its prune."""
  def pick(seed):
    hit = [r for r in series(rows, method, seed) if r["ft_steps"] == ft]
    return hit[0] if hit else None
  return pick


def at_step(rows, method, step):
  def pick(seed):
    hit = [r for r in series(rows, method, seed) if r["step"] == step]
    return hit[0] if hit else None
  return pick


def val_stop(rows):
  """pick(seed): early_stop's checkpoint with the lowest select-split held-out loss."""
  def pick(seed):
    curve = [r for r in series(rows, EARLY, seed) if _num(r.get("memo_ema/heldout_loss"))]
    return min(curve, key=lambda r: r["memo_ema/heldout_loss"]) if curve else None
  return pick


def tracker_reading(row, key):
  """memo_ema/index as it is; memo_ema/gap relative to the held-out loss (scale-free)."""
  if key == "memo_ema/index":
    return row.get(key)
  gap, held = row.get("memo_ema/gap"), row.get("memo_ema/heldout_loss")
  return gap / held if _num(gap) and _num(held) and held > 0 else None


def tracker_stop(rows, key, threshold):
  """pick(seed): the first early_stop checkpoint whose tracker reading crosses
  `threshold`, the last one if none does (training never memorized enough to stop)."""
  def pick(seed):
    curve = series(rows, EARLY, seed)
    for r in curve:
      v = tracker_reading(r, key)
      if _num(v) and v >= threshold:
        return r
    return curve[-1] if curve else None
  return pick


def family_means(rows, method, qkey=QUALITY, mkey="mem_ratio"):
  """(quality, memorization) means over seeds at each evaluated step of a family."""
  steps = sorted({r["step"] for r in rows if r["method"] == method})
  out = []
  for step in steps:
    pts = [r for r in rows if r["method"] == method and r["step"] == step
           and _num(r.get(qkey)) and _num(r.get(mkey))]
    if pts:
      out.append((float(np.mean([r[qkey] for r in pts])), float(np.mean([r[mkey] for r in pts]))))
  return out


def plot(rows, path, title):
  """Memorization (mem_ratio; nll_gap) against each quality (test_nll; the samples'),
  one line per family (seed means, in step order)."""
  import matplotlib
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt
  methods = list(dict.fromkeys(r["method"] for r in rows))
  qkeys = (QUALITY, sample_quality_key(rows))
  fig, axes = plt.subplots(2, 2, figsize=(11, 8.4))
  for (qi, qkey), (mi, mkey) in itertools.product(enumerate(qkeys), enumerate(MEMORIZATION)):
    ax = axes[qi, mi]
    for m in methods:
      pts = family_means(rows, m, qkey, mkey)
      if pts:
        q, v = zip(*pts)
        style = dict(lw=2.5, color="black") if m == EARLY else dict(lw=1.2)
        ax.plot(q, v, "o-", ms=3, label=m, **style)
    ax.axhline(0, color="grey", lw=0.6)
    if qkey != QUALITY:
      ax.set_xscale("log")
    ax.set_xlabel(f"{qkey} (lower is better)")
    ax.set_ylabel(f"{mkey} (lower: less memorization)")
  axes[0, 0].legend(fontsize=8)
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def table(rows, picks, mkeys=MEMORIZATION, qkey=QUALITY):
  """Markdown: each compared point's quality and its memorization minus early
  stopping's at that quality (95% interval over seeds; unmatched seeds counted)."""
  head = f"| point | {qkey} | " + " | ".join(f"{k} - early stop" for k in mkeys) + " |"
  lines = [head, "|---" * (2 + len(mkeys)) + "|"]
  for label, pick in picks:
    cells, quality = [], math.nan
    for k in mkeys:
      d = dominance(rows, pick, k, qkey)
      quality = d["quality"]
      cell = f"{stats.fmt_interval(d['mean'], d['half'])} ({stats.verdict(d['mean'], d['half'])}, n={d['n']})"
      if d["unmatched"]:
        cell += f"; {d['unmatched']} seed(s) better than every early_stop checkpoint"
      cells.append(cell)
    lines.append(f"| {label} | {quality:.4g} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


TRACKER_THRESHOLD = 0.5  # fixed in docs/results/PLAN.md before the judged runs
CURVE_STEPS = (2000, 4000, 6000)  # where the other families are compared (PLAN.md)


def tracker_key(rows):
  """memo_ema/index where the density is known (the tracker logs it), else the gap."""
  return "memo_ema/index" if any(_num(r.get("memo_ema/index")) for r in rows
                                 if r.get("data") == "gmm") else "memo_ema/gap"


def picks(rows):
  """The compared points, in the order PLAN.md names them: the two stopping rules,
  every pruned family at each fine-tuning step, and each other family at the
  CURVE_STEPS it has (a longer run's later steps are drawn, not compared). No choice here reads the test split."""
  key = tracker_key(rows)
  out = [("val_stop (min select-split held-out loss)", val_stop(rows)),
         (f"tracker_stop ({key} >= {TRACKER_THRESHOLD})",
          tracker_stop(rows, key, TRACKER_THRESHOLD))]
  for m in dict.fromkeys(r["method"] for r in rows if r["method"] != EARLY):
    mine = [r for r in rows if r["method"] == m]
    if any(r["budget"] != "frontier" for r in mine):  # pruned: by fine-tuning step
      for ft in sorted({r["ft_steps"] for r in mine}):
        out.append((f"{m} @{mine[0]['budget']} +{ft}", at_ft(rows, m, ft)))
    else:
      for step in sorted({r["step"] for r in mine if r["step"] in CURVE_STEPS}):
        out.append((f"{m} step {step}", at_step(rows, m, step)))
  return out


def sample_quality_key(rows):
  """The second matching: samples against fresh data (energy distance where the density
  is known, the feature-space Frechet distance elsewhere); lower is better for both."""
  return "energy_distance" if any(_num(r.get("energy_distance")) for r in rows) else "fd"


def _side(mean, half):
  """-1 / 1 where the interval lies below / above zero, 0 where it holds zero."""
  return -1 if mean < -half else 1 if mean > half else 0


def point_verdict(rows, pick, qkeys=None):
  """PLAN.md's rule for one compared point: "beats" when, under every matching
  (test_nll and the samples' quality), the interval of mem_ratio or of nll_gap
  lies below zero with the other's not above it; "worse" when it does not beat
  and some interval lies above zero; "within noise" otherwise; "n/a" with fewer
  than two paired seeds under some matching."""
  qkeys = qkeys or (QUALITY, sample_quality_key(rows))
  beats, above = True, False
  for qkey in qkeys:
    sides = []
    for mkey in MEMORIZATION:
      d = dominance(rows, pick, mkey, qkey)
      if d["n"] < 2:
        return "n/a"
      sides.append(_side(d["mean"], d["half"]))
    above = above or 1 in sides
    beats = beats and -1 in sides and 1 not in sides
  return "beats" if beats else "worse" if above else "within noise"


def family_points(rows):
  """{family: [(label, pick)]}: the compared points of each family but early_stop; a
  pruned family by its longest fine-tuning only (PLAN.md: it must still hold there)."""
  out = {}
  for label, pick in picks(rows)[2:]:  # the stopping rules are early_stop checkpoints
    out.setdefault(label.split(" ")[0], []).append((label, pick))
  for fam, pts in out.items():
    if "+" in pts[-1][0]:  # "<method> @<budget> +<ft>", in fine-tuning order
      out[fam] = pts[-1:]
  return out


def verdicts(rows_by_data):
  """PLAN.md's verdict per family over the judged datasets ({name: rows}): a family
  beats early stopping when one of its compared points (the same one on every
  dataset) beats it on each dataset. Returns {family: (verdict, {label: {name:
  point verdict}})}, verdict "beats", "worse" (a point worse on every dataset
  and none beating), or "does not beat"."""
  per = {name: family_points(rows) for name, rows in rows_by_data.items()}
  families = dict.fromkeys(f for pts in per.values() for f in pts)
  out = {}
  for fam in families:
    labels = dict.fromkeys(lab for pts in per.values() for lab, _ in pts.get(fam, []))
    detail = {}
    for lab in labels:
      detail[lab] = {}
      for name, rows in rows_by_data.items():
        hit = [p for lb, p in per[name].get(fam, []) if lb == lab]
        detail[lab][name] = point_verdict(rows, hit[0]) if hit else "n/a"
    every = lambda v: any(all(d == v for d in by.values()) for by in detail.values())
    out[fam] = ("beats" if every("beats") else "worse" if every("worse")
                else "does not beat", detail)
  return out


def verdict_table(rows_by_data):
  """Markdown: each family's verdict and the point verdicts it rests on."""
  names = list(rows_by_data)
  lines = ["| family | verdict | point | " + " | ".join(names) + " |",
           "|---" * (3 + len(names)) + "|"]
  for fam, (v, detail) in verdicts(rows_by_data).items():
    for i, (lab, by) in enumerate(detail.items()):
      lines.append(f"| {fam if i == 0 else ''} | {v if i == 0 else ''} | {lab} | " +
                   " | ".join(by[n] for n in names) + " |")
  return "\n".join(lines)


def versus_stop(rows, pick, key):
  """(mean, half, n): the point minus the tracker stop on `key`, paired by seed."""
  def by_seed(p):
    picked = {seed: p(seed) for seed in seeds(rows)}
    return {seed: r[key] for seed, r in picked.items() if r is not None and _num(r.get(key))}
  return stats.paired(by_seed(pick),
                      by_seed(tracker_stop(rows, tracker_key(rows), TRACKER_THRESHOLD)))


def stop_keys(rows):
  """Quality (the model's and its samples') and memorization: lower is better in each."""
  return (QUALITY, sample_quality_key(rows)) + MEMORIZATION


def against_stop(rows, picks):
  """Markdown: each compared point minus the tracker stop, seed by seed, on quality and
  memorization alike (the stop a user of `memo.stop_at` gets): mean ± 95% t-interval.
  Unlike `table`, nothing is matched: a point can be better on quality and no worse
  on memorization at once, which matching on quality cannot show."""
  keys = stop_keys(rows)
  lines = ["| point | " + " | ".join(f"{k} - tracker stop" for k in keys) + " |",
           "|---" * (1 + len(keys)) + "|"]
  for label, pick in picks:
    if label.startswith("tracker_stop"):
      continue
    cells = []
    for k in keys:
      mean, half, n = versus_stop(rows, pick, k)
      cells.append(f"{stats.fmt_interval(mean, half)} ({stats.verdict(mean, half)}, n={n})")
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def stop_verdict(rows, pick):
  """PLAN.md's Amendment 5 rule for a point against the tracker stop: "beats" when the
  interval of test_nll lies below zero and none of the samples' quality, mem_ratio and
  nll_gap lies above zero; "n/a" with fewer than two paired seeds; else "does not beat"."""
  sides = []
  for k in stop_keys(rows):
    mean, half, n = versus_stop(rows, pick, k)
    if n < 2:
      return "n/a"
    sides.append(_side(mean, half))
  return "beats" if sides[0] == -1 and 1 not in sides else "does not beat"


def stop_verdict_table(rows, labels):
  """Markdown: each named compared point's verdict against the tracker stop."""
  found = dict(picks(rows))
  lines = ["| point | verdict against the tracker stop |", "|---|---|"]
  for label in labels:
    verdict = stop_verdict(rows, found[label]) if label in found else "n/a (no such point)"
    lines.append(f"| {label} | {verdict} |")
  return "\n".join(lines)


def summarize(rows):
  """Markdown for a frontier sweep: the dominance tables, matched on the model's
  likelihood of held-out data and on its samples' distance to fresh data."""
  out = []
  for qkey in (QUALITY, sample_quality_key(rows)):
    out += [f"### Memorization against early stopping at equal {qkey}", "",
            f"Each point's memorization minus early_stop's at the first step reaching the "
            f"same {qkey} (per seed, linear between checkpoints): mean ± 95% t-interval "
            "over seeds. Negative: less memorization than stopping earlier would give.", "",
            table(rows, picks(rows), qkey=qkey), ""]
  out += ["### Against the tracker stop, unmatched", "",
          f"Each point minus the tracker stop (the first early_stop checkpoint whose "
          f"{tracker_key(rows)} reading reaches {TRACKER_THRESHOLD}, what "
          f"`--config.memo.stop_at={TRACKER_THRESHOLD}` gives), seed by seed: mean ± 95% "
          "t-interval. Lower is better in every column. Not part of the frontier verdict "
          "(PLAN.md): a finding here is a hypothesis until a plan fixed before its runs "
          "judges it on fresh seeds.", "",
          against_stop(rows, picks(rows)), ""]
  return "\n".join(out)
