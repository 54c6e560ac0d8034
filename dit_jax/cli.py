"""What the thin scripts share: logging, compile cache, readable errors, summaries."""
import contextlib
import logging
import os
import sys

import jax
from absl import flags
from absl import logging as absl_logging

from dit_jax import accelerators
from dit_jax import checkpointing
from dit_jax import distributed
from dit_jax import evaluate
from dit_jax import host_memory
from dit_jax import memorization
from dit_jax import train
from dit_jax import train_step
from dit_jax import workdir as workdir_lib
from dit_jax import workdir_lock
from dit_jax import writers
from dit_jax.configlib import ConfigError

FLAGS = flags.FLAGS


flags.DEFINE_string("coordinator", None, "Multi-process runs: host:port of process 0 "
                    "(with --num_processes and --process_id; SLURM and TPU slices need none).")
flags.DEFINE_integer("num_processes", None, "Multi-process runs: the number of processes.")
flags.DEFINE_integer("process_id", None, "Multi-process runs: this process's index.")


def setup():
  """Host memory kept for reuse, joins a multi-process run if asked, our INFO logs, the
  backend in use, a persistent compilation cache (JAX_COMPILATION_CACHE_DIR overrides
  its place).

  Runs before any computation: host_memory has to act before JAX starts its threads.
  """
  host_memory.keep_freed_memory()
  with friendly_errors():
    distributed.initialize(FLAGS.coordinator, FLAGS.num_processes, FLAGS.process_id)
  # libraries (orbax, tfds) log a lot at INFO through absl: keep theirs to warnings
  absl_logging.set_verbosity(absl_logging.WARNING)
  logging.getLogger("dit_jax").setLevel(logging.INFO)
  if not jax.config.jax_compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir",
                      os.path.join(os.path.expanduser("~"), ".cache", "dit_jax_xla"))
  # a sweep compiles the same sampler, tracker and loss programs (0.2-1 s each) at every
  # point of an architecture: kept from 0.2 s, later points and resumed sweeps read them
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
  accelerators.report()  # the backend and devices, and a loud word if it is the wrong one


# The exit status of a command stopped (SIGTERM, a preemption notice) before its
# configured end: its checkpoint is saved and the same command resumes it. 75 is
# sysexits' EX_TEMPFAIL ("try again later"): distinct from 0 (finished), 1 (an error)
# and 128+N (killed by signal N), so a job script or a scheduler can requeue on it.
STOPPED_EXIT = 75

# errors the project raises about the user's input or machine, each with its fix in the
# message; anything else (a bug, JAX's own errors) keeps its traceback
USER_ERRORS = (ConfigError, workdir_lock.WorkdirError, checkpointing.CheckpointWriteError,
               checkpointing.DamagedCheckpointError, train_step.NonFiniteLossError)


@contextlib.contextmanager
def friendly_errors():
  """Bad input ends the program with its message, not a traceback."""
  try:
    yield
  except USER_ERRORS as e:
    logging.debug("error", exc_info=True)
    sys.exit(f"error: {e}")
  except train.StoppedEarly as e:
    print(f"stopped: {e}", file=sys.stderr)
    sys.exit(STOPPED_EXIT)


def finish(run):
  """Prints the run's summary (each seed's, for seeds trained together); a run stopped
  before its end exits with STOPPED_EXIT."""
  runs = getattr(run, "runs", [run])
  for one in runs:
    print_summary(one)
  if run.stop_requested:
    print(f"stopped before the configured end (step {int(runs[0].state['step'])} of "
          f"{runs[0].config.train.steps}); run the same command again to finish.",
          file=sys.stderr)
    sys.exit(STOPPED_EXIT)


@contextlib.contextmanager
def locked_workdir(workdir, tool):
  """Holds an existing workdir's lock while `tool` writes its files (eval.json,
  report/): a run or a second tool on it is refused, not raced."""
  workdir_lib.check_local(workdir)
  if not os.path.isdir(workdir):
    raise ConfigError(f"--workdir {workdir} does not exist: give a training workdir.")
  lock = workdir_lock.acquire(workdir, process_index=jax.process_index(), tool=tool)
  try:
    yield
  finally:
    workdir_lock.release(lock)


def print_tracker_crossing(rows, threshold):
  """Where the tracker first read `threshold` in `rows`: the step an unpruned run with
  --config.memo.stop_at=threshold stops at."""
  step, name, value, crossed = memorization.first_crossing(rows, threshold)
  if step is None:
    return
  if crossed:
    print(f"  tracker: {name} first reached {threshold:g} at step {step} ({value:.3f}): "
          f"where --config.memo.stop_at={threshold:g} (without a prune) stops training")
  else:
    print(f"  tracker: {name} stayed below {threshold:g} (last {value:.3f} at step {step})")


def print_advice(threshold):
  """What docs/RESULTS.md's judged comparison supports, after a run that pruned."""
  print("  advice (docs/RESULTS.md): no pruned model beat stopping earlier at equal quality "
        "in the judged study;")
  print(f"    to memorize less, stop on the tracker (--config.memo.stop_at={threshold:g}, "
        "no prune); prune for a smaller, faster model")


def print_summary(run):
  if not workdir_lib.is_writer():  # one summary per run, not one per host
    return
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
  if run.tracker_stop:
    t = run.tracker_stop
    print(f"  stopped by the tracker at step {t['step']} of {run.config.train.steps}: "
          f"{t['metric']} {t['reading']:.3f} >= memo.stop_at {t['threshold']:g}")
  else:  # before a prune: the unpruned model, which a tracker stop would have stopped
    before = [r for r in rows if not run.pruned or r["step"] <= run.pruned["step"]]
    print_tracker_crossing(before, memorization.STUDY_STOP_AT)
  if run.pruned:
    print_advice(memorization.STUDY_STOP_AT)
    p = run.pruned
    at = p["step"]
    before = writers.median_steps_per_sec(rows, last=at)
    after = writers.median_steps_per_sec(rows, first=at + run.config.log_every)
    print(f"  pruned at step {at} ({p['method']}): heads {p['heads_before']} -> {p['heads']}, "
          f"mlp {p['mlp_before']} -> {p['mlp']}")
    print(f"  params {p['num_params_before']} -> {p['num_params']}, FLOPs/image "
          f"{p['flops_before']} -> {p['flops']}, train steps/s {before:.1f} -> {after:.1f}")
  for name in (workdir_lib.CONFIG, workdir_lib.METRICS, workdir_lib.CHECKPOINTS,
               workdir_lib.SAMPLES, workdir_lib.EVAL, workdir_lib.REPORT, workdir_lib.CONTROL):
    if os.path.exists(workdir_lib.path(run.workdir, name)):
      print(f"  {name}")
