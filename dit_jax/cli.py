"""What the thin scripts share: logging, compile cache, readable errors, summaries."""
import contextlib
import logging
import os
import sys

import jax
import numpy as np
from absl import logging as absl_logging

from dit_jax import evaluate
from dit_jax import host_memory
from dit_jax import writers


def setup():
  """Host memory kept for reuse, our INFO logs, a persistent compilation cache.

  JAX_COMPILATION_CACHE_DIR overrides the cache's place. Runs before any computation:
  host_memory has to act before JAX starts its threads.
  """
  host_memory.keep_freed_memory()
  # libraries (orbax, tfds) log a lot at INFO through absl: keep theirs to warnings
  absl_logging.set_verbosity(absl_logging.WARNING)
  logging.getLogger("dit_jax").setLevel(logging.INFO)
  if not jax.config.jax_compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir",
                      os.path.join(os.path.expanduser("~"), ".cache", "dit_jax_xla"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


@contextlib.contextmanager
def friendly_errors():
  """Bad input ends the program with its message, not a traceback."""
  try:
    yield
  except (ValueError, FileNotFoundError, FloatingPointError) as e:
    logging.debug("error", exc_info=True)
    sys.exit(f"error: {e}")


def print_summary(run):
  rows = writers.read_metrics(run.workdir)
  last = next((r for r in reversed(rows) if "train/loss" in r), {})
  print(f"\nworkdir: {run.workdir}")
  print(f"  step {last.get('step', '?')}  train/loss {last.get('train/loss', float('nan')):.4f}"
        f"  steps/s {last.get('train/steps_per_sec', float('nan')):.1f}")
  print("  hook time (s): " + ", ".join(f"{k} {v:.1f}" for k, v in run.timings.items()))
  if run.before:
    print("  before prune: " + evaluate.format_summary(run.before))
  if run.control:
    print("  control:      " + evaluate.format_summary(run.control)
          + "  (unpruned, the same fine-tuning)")
  if run.summary:
    print(("  after prune:  " if run.pruned else "  eval: ") + evaluate.format_summary(run.summary))
  if run.pruned:
    p = run.pruned
    at = p["step"]
    speed = lambda rs: np.median(rs) if rs else float("nan")
    before = speed([r["train/steps_per_sec"] for r in rows
                    if "train/steps_per_sec" in r and r["step"] <= at])
    after = speed([r["train/steps_per_sec"] for r in rows
                   if "train/steps_per_sec" in r and r["step"] > at + run.config.log_every])
    print(f"  pruned at step {at} ({p['method']}): heads {p['heads_before']} -> {p['heads']}, "
          f"mlp {p['mlp_before']} -> {p['mlp']}")
    print(f"  params {p['num_params_before']} -> {p['num_params']}, FLOPs/image "
          f"{p['flops_before']} -> {p['flops']}, train steps/s {before:.1f} -> {after:.1f}")
  for name in ("config.json", "metrics.jsonl", "checkpoints", "samples", "eval.json", "report"):
    if os.path.exists(os.path.join(run.workdir, name)):
      print(f"  {name}")
