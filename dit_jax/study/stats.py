"""Intervals over seeds: what a claim "A beats B" needs before it is made.

Sweeps pair their points by seed (each seed has its own training subset and
base run, shared by every method), so method differences are judged by the
paired per-seed difference and its Student-t interval.
"""
import math

import numpy as np
from scipy import stats as scipy_stats


def t_interval(values, level=0.95):
  """(mean, half-width, n) of the two-sided Student-t interval; half-width nan if n < 2."""
  vals = np.asarray([v for v in values if v is not None and math.isfinite(v)], np.float64)
  n = len(vals)
  if n == 0:
    return math.nan, math.nan, 0
  if n == 1:
    return float(vals[0]), math.nan, 1
  half = scipy_stats.t.ppf(0.5 + level / 2, n - 1) * vals.std(ddof=1) / math.sqrt(n)
  return float(vals.mean()), float(half), n


def paired(a_by_seed, b_by_seed, level=0.95):
  """The t-interval of a - b over the seeds both have: (mean, half-width, n)."""
  seeds = sorted(set(a_by_seed) & set(b_by_seed))
  diffs = [a_by_seed[s] - b_by_seed[s] for s in seeds
           if a_by_seed[s] is not None and b_by_seed[s] is not None]
  return t_interval(diffs, level)


def verdict(mean, half, lower_is_better=True):
  """'lower' / 'higher' when the interval excludes zero, else 'within noise'; with
  (better) / (worse) unless lower_is_better is None (a measure with no better side)."""
  if not math.isfinite(half):
    return "n/a (one seed)"
  if abs(mean) <= half:
    return "within noise"
  if lower_is_better is None:
    return "lower" if mean < 0 else "higher"
  better = (mean < 0) == lower_is_better
  return ("lower" if mean < 0 else "higher") + (" (better)" if better else " (worse)")


def fmt_interval(mean, half, digits=3):
  if not math.isfinite(mean):
    return "-"
  if not math.isfinite(half):
    return f"{mean:.{digits}g}"
  return f"{mean:.{digits}g} ± {half:.2g}"


def bootstrap_interval(values, level=0.95, draws=2000, seed=0):
  """(mean, low, high, n): the percentile bootstrap of the mean over `values` (seeds).

  For a figure of proportions: resampled means stay within the values' own range, so
  a ratio's interval never leaves [0, 1], where mean ± a t half-width can fall below 0.
  With one value the interval is that value (n says so).
  """
  vals = np.asarray([v for v in values if v is not None and math.isfinite(v)], np.float64)
  if len(vals) == 0:
    return math.nan, math.nan, math.nan, 0
  rng = np.random.default_rng(seed)
  means = vals[rng.integers(0, len(vals), (draws, len(vals)))].mean(axis=1)
  low, high = np.quantile(means, [0.5 - level / 2, 0.5 + level / 2])
  return float(vals.mean()), float(low), float(high), len(vals)
