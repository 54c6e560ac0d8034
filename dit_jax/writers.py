"""Metrics to DIR/metrics.jsonl and TensorBoard event files (no TensorFlow needed)."""
import json
import logging
import math
import os

import numpy as np
from tensorboardX import SummaryWriter

from dit_jax import workdir as workdir_lib


def _scalar(v):
  v = float(np.asarray(v))
  return v if math.isfinite(v) else str(v)  # JSON has no NaN; keep it readable


class MetricWriter:
  """Appends one JSON object per logged step and mirrors scalars to TensorBoard.

  On a process other than the writer (workdir.is_writer) it writes nothing.
  `resume_step`: the step the run resumes from; TensorBoard then drops the events an
  earlier, interrupted run logged after it, instead of drawing those steps twice
  (metrics.jsonl keeps them: the newer row of a step wins in read_metrics).
  """

  def __init__(self, workdir, tensorboard=True, resume_step=0):
    self.path = workdir_lib.path(workdir, workdir_lib.METRICS)
    self._file = self._tb = None
    if not workdir_lib.is_writer():
      return
    os.makedirs(workdir, exist_ok=True)
    _end_torn_line(self.path)
    self._file = open(self.path, "a", encoding="utf-8")
    self._tb = SummaryWriter(logdir=workdir, flush_secs=30,
                             purge_step=resume_step + 1) if tensorboard else None

  def write(self, step, metrics):
    if self._file is None:
      return
    row = {"step": int(step), **{k: _scalar(v) for k, v in metrics.items()}}
    self._file.write(json.dumps(row) + "\n")
    self._file.flush()
    if self._tb is not None:
      for k, v in row.items():
        if k != "step" and isinstance(v, float):
          self._tb.add_scalar(k, v, int(step))

  def close(self, quiet=False):
    """Flushes and closes; quiet=True logs a failed flush instead of raising it."""
    try:
      if self._file is not None:
        self._file.close()
      if self._tb is not None:
        self._tb.close()
    except OSError as e:
      if not quiet:
        raise
      logging.getLogger("dit_jax").warning("metrics of %s not fully written: %s",
                                           os.path.dirname(self.path), e)


def _end_torn_line(path):
  """A run killed in the middle of a write (or a full disk) leaves a line without its
  newline: end it, so that the next row starts a line of its own and only the torn
  one is lost."""
  if not os.path.exists(path) or os.path.getsize(path) == 0:
    return
  with open(path, "rb+") as f:
    f.seek(-1, os.SEEK_END)
    if f.read(1) != b"\n":
      f.write(b"\n")


def read_metrics(workdir):
  """Rows of metrics.jsonl; for a step logged twice (a resumed run) the last wins.

  A line that does not parse (torn by a kill or a full disk) is skipped with a warning.
  """
  path = workdir_lib.path(workdir, workdir_lib.METRICS)
  by_step = {}
  if os.path.exists(path):
    with open(path, encoding="utf-8", errors="replace") as f:
      for number, line in enumerate(f, 1):
        if not line.strip():
          continue
        try:
          row = json.loads(line)
          step = row["step"]
        except (json.JSONDecodeError, TypeError, KeyError):
          logging.getLogger("dit_jax").warning(
              "%s line %d is not a whole metrics row (a write cut short by a kill or a "
              "full disk?); skipped: %.80r", path, number, line)
          continue
        by_step.setdefault(step, {}).update(row)
  return [by_step[s] for s in sorted(by_step)]


def median_steps_per_sec(rows, first=0, last=math.inf):
  """Median train/steps_per_sec of the rows logged at steps in (first, last]; nan if none.

  After a prune, start one log interval late: that interval holds the re-compile.
  """
  rates = [r["train/steps_per_sec"] for r in rows
           if "train/steps_per_sec" in r and first < r["step"] <= last]
  return float(np.median(rates)) if rates else float("nan")
