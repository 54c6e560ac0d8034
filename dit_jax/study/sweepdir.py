"""A sweep workdir's own files: their names, their columns, and how they are read and written.

    SWEEP/sweep.csv          one row per point at its last step (COLUMNS)
    SWEEP/sweep_steps.csv    one row per point and evaluated step (STEP_COLUMNS)
    SWEEP/sweep_summary.md   the comparisons at each fine-tuning step
    SWEEP/sweep.png          mem_ratio over fine-tuning, per budget
    SWEEP/<point name>/      each point's own workdir (dit_jax.workdir owns its layout)
    KEEP/<sweep>/            a finished sweep's kept copy: its two csv files and kept.json

Every other module of the study goes through here, so a file is spelled in one place.
"""
import csv
import json
import os

from dit_jax import workdir as workdir_lib

POINTS = "sweep.csv"
STEPS = "sweep_steps.csv"
SUMMARY = "sweep_summary.md"
PLOT = "sweep.png"
KEPT = "kept.json"  # beside the two csv files of a finished sweep's kept copy

COLUMNS = ["name", "method", "budget", "seed", "data", "ratio", "mlp_ratio", "heads", "mlp",
           "mem_ratio", "precision", "recall", "fd", "fid", "nll", "num_params", "flops_per_image",
           "train_steps_per_sec", "sample_images_per_sec", "step", "ft_steps"] + [
               # quality copying cannot win, and memorization as a likelihood gap
               "test_nll", "train_nll", "nll_gap", "nll_gap_se", "nll_excess",
               "energy_distance"]
# per evaluated step: the evaluation and what the gap tracker said at that step
STEP_COLUMNS = ["name", "method", "budget", "seed", "data", "step", "ft_steps", "mem_ratio",
                "precision", "recall", "fd", "fid", "nll", "d_ratio_p50", "num_params",
                "memo_ema/gap", "memo_ema/index", "memo_ema/train_loss",
                "memo_ema/heldout_loss", "memo/gap", "memo/index",
                # known density: the held-out loss's excess over the true score's, per
                # t-bucket of the default 8 (small t first), and the true score's loss
                "memo/gt_heldout_loss", "memo_ema/gt_excess"] + [
                    f"memo_ema/gt_excess_t{b}" for b in range(8)] + [
                    "test_nll", "test_nll_se", "train_nll", "train_nll_se", "nll_gap",
                    "nll_gap_se", "nll_excess", "energy_distance"]


def path(sweep_dir, name):
  return os.path.join(sweep_dir, name)


def write_csv(rows, file, columns):
  """Atomically, from the writing process only (the others of a multi-host run skip)."""
  if not workdir_lib.is_writer():
    return file
  os.makedirs(os.path.dirname(os.path.abspath(file)), exist_ok=True)
  tmp = file + ".tmp"
  with open(tmp, "w", newline="", encoding="utf-8") as f:
    w = csv.DictWriter(f, columns, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
  os.replace(tmp, file)
  return file


def read_csv(file):
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
  with open(file, encoding="utf-8") as f:
    return [{k: parse(v) for k, v in r.items()} for r in csv.DictReader(f)]


def write_points(sweep_dir, rows):
  return write_csv(rows, path(sweep_dir, POINTS), COLUMNS)


def write_steps(sweep_dir, rows):
  return write_csv(rows, path(sweep_dir, STEPS), STEP_COLUMNS)


def read_rows(sweep_dir, file):
  """`file`'s rows in a sweep workdir; [] where it has not been written yet."""
  f = path(sweep_dir, file)
  return read_csv(f) if os.path.exists(f) else []


def merge(row_lists):
  """One list of rows from several sweeps; a (point, step) seen twice is kept once."""
  seen, out = set(), []
  for rows in row_lists:
    for r in rows:
      key = (r["name"], r["step"])
      if key not in seen:
        seen.add(key)
        out.append(r)
  return out


def load(paths, file=STEPS):
  """Rows from sweep workdirs (their `file`) or csv files, merged by (point, step): the
  seeds of one study may have run as separate sweep commands (e.g. one per core)."""
  lists = []
  for p in paths:
    f = path(p, file) if os.path.isdir(p) else p
    if not os.path.exists(f):
      raise FileNotFoundError(f"{f} does not exist; pass a sweep workdir that has run "
                              f"(it writes {file}) or a csv file of its rows.")
    lists.append(read_csv(f))
  return merge(lists)


def keep(sweep_dir, dest, info):
  """Copies a finished sweep's rows (sweep.csv, sweep_steps.csv) into `dest`, then
  writes KEPT (`info`: where and when it ran) last, so a copy with KEPT is whole."""
  for name, columns in ((POINTS, COLUMNS), (STEPS, STEP_COLUMNS)):
    write_csv(read_rows(sweep_dir, name), path(dest, name), columns)
  workdir_lib.atomic_write(path(dest, KEPT), json.dumps(info, indent=1, sort_keys=True))


def is_kept(dest):
  return os.path.exists(path(dest, KEPT))
