"""What a training run does between steps: logging, checkpoints, sample grids, the
memorization tracker, evaluations and the prune.

`make_hooks(run)` gives them as (name, fn(step, metrics)) pairs for the loop in
dit_jax.train; `prune_now` and `evaluate_now` are also what the loop calls outside
the hooks (a run resumed right at its prune, the end of a run).
"""
import logging
import os
import time

import jax

from dit_jax import checkpointing
from dit_jax import configlib
from dit_jax import evaluate
from dit_jax import latents
from dit_jax import memorization
from dit_jax import perf
from dit_jax import pruning
from dit_jax import report
from dit_jax import sampling
from dit_jax import sharding
from dit_jax import state as state_lib
from dit_jax import workdir as workdir_lib
from dit_jax.models import dit

log = logging.getLogger("dit_jax")


def _every(n, step, last):
  return n and n > 0 and (step % n == 0 or step == last)


def make_hooks(run):
  """Periodic work between steps, each a (name, fn(step, metrics)) pair."""
  config = run.config
  total = config.train.steps
  value_range = run.dataset.info["value_range"]
  peak, _ = perf.peak_flops(config.train.peak_flops, config.model.dtype)
  last_time, last_step = time.perf_counter(), None

  def log_metrics(step, metrics):
    nonlocal last_time, last_step
    if not _every(config.log_every, step, total):
      return
    now = time.perf_counter()
    out = {k: float(v) for k, v in jax.device_get(metrics).items()}
    out["train/lr"] = float(state_lib.lr_schedule(config.train, total)(step - 1))
    if last_step is not None:
      rate = (step - last_step) / max(now - last_time, 1e-9)
      flops = perf.train_flops_per_step(dit.flops_per_image(run.setup.arch),
                                        config.train.batch_size)
      out["train/steps_per_sec"] = rate
      out["train/images_per_sec"] = rate * config.train.batch_size
      out["train/mfu"] = rate * flops / (peak * jax.device_count())
    last_time, last_step = now, step
    run.writer.write(step, out)

  samplers = {}

  def samples(step, metrics):
    scfg = config.sample
    if not _every(scfg.every, step, total) or scfg.num <= 0:
      return
    key = (run.setup.arch, scfg.num)
    if key not in samplers:  # the architecture may change after pruning
      samplers[key] = sampling.make_sampler(run.setup, scfg, scfg.num, value_range, run.mesh)
    x = sharding.gather(samplers[key](run.state["ema"], jax.random.PRNGKey(config.seed + 1)))
    x = latents.decode(run.dataset, x)  # a latent run's grid shows images
    if workdir_lib.is_writer():
      report.save_grid(x, workdir_lib.path(
        run.workdir, workdir_lib.SAMPLES, f"step_{step:07d}.png"),
                       latents.pixel_dataset(run.dataset).info["value_range"])

  def checkpoint(step, metrics):
    if step % config.checkpoint.every == 0 or step == total:
      run.save(step)

  tracker = None  # built on first use: it computes the closed-form losses once

  def track(step, metrics):
    nonlocal tracker
    if not _every(config.memo.every, step, total):
      return
    if tracker is None:
      tracker = memorization.GapTracker(run.setup.sched, run.dataset, config.memo.probe,
                                        config.memo.buckets, config.diffusion.weighting,
                                        config.seed, run.mesh)
    readings = tracker(run.setup.arch, lambda p: state_lib.make_eps_fn(run.setup, p),
                       run.state["params"], run.state["ema"])
    run.writer.write(step, readings)
    threshold = config.memo.stop_at
    if threshold > 0 and run.tracker_stop is None:
      # every process computed the same readings (one jitted call over the mesh), so
      # every process stops at the same step
      name, value = memorization.stop_reading(readings)
      if value >= threshold:
        run.tracker_stop = {"step": int(step), "metric": name, "reading": value,
                            "threshold": float(threshold)}

  def prune(step, metrics):
    if run.pruned is None and step == config.prune.at_step:
      prune_now(run, step)

  at_steps = set(config.eval.at_steps)

  def evaluation(step, metrics):
    if step in at_steps and config.eval.num and not (evaluates_at_end(config) and step == total):
      # the end has its own
      evaluate_now(run, top_level=False)

  # pruning comes first so that tracking and the checkpoint of this step see the new model;
  # evaluation precedes the checkpoint so that a run stopped during it evaluates again
  return [("log", log_metrics), ("prune", prune), ("memo", track), ("samples", samples),
          ("eval", evaluation), ("checkpoint", checkpoint)]


def control_config(config):
  """The same run with a prune event that removes nothing: the same fine-tuning steps
  and the same EMA restart, so it differs from the pruned run by the pruning alone."""
  return configlib.with_overrides(config, {
      "prune.ratio": 0.0, "prune.mlp_ratio": 0.0, "prune.method": "random",
      "prune.target": "ratio", "prune.control": False, "prune.eval_before": False})


def _save_control_start(run, step):
  """The unpruned state at the prune: where the control starts (written once)."""
  directory = workdir_lib.path(run.workdir, workdir_lib.CONTROL, workdir_lib.CHECKPOINTS)
  if os.path.isdir(os.path.join(directory, str(step))):
    return
  ckpt = checkpointing.Checkpointer(directory, run.config.checkpoint.keep, async_save=False)
  ckpt.save(step, run.state, run.meta(step), force=True)
  ckpt.close()


def prune_now(run, step):
  """Importance -> surgery -> re-jit, in the middle of a run (config.prune)."""
  config = run.config
  before = run.setup.arch
  if config.prune.control:
    _save_control_start(run, step)
  if config.prune.eval_before and config.eval.num:
    run.before = evaluate_now(run, "before_prune")
  arch, state, record = pruning.prune(config, run.setup, run.state, run.dataset,
                                      run.mesh, step)
  if config.prune.finetune_seed >= 0:  # the fine-tuning's noise from its own seed
    state = dict(state, rng=jax.random.PRNGKey(
        pruning.derived_seed(config.seed, 1 + config.prune.finetune_seed)))
  run.set_state(state, state_lib.make_setup(config, arch))
  run.pruned = record
  run.writer.write(step, {"prune/num_params": record["num_params"],
                          "prune/flops_per_image": record["flops"]})
  log.info("pruned at step %d (%s): heads %s -> %s, mlp %s -> %s, params %d -> %d", step,
           config.prune.method, before.heads, arch.heads, before.mlp, arch.mlp,
           record["num_params_before"], record["num_params"])


def evaluates_at_end(config):
  """eval.at_end with samples to draw (eval.num = 0 turns evaluation off)."""
  return config.eval.at_end and config.eval.num > 0


def will_evaluate(config):
  e, p = config.eval, config.prune
  return e.num > 0 and (e.at_end or bool(e.at_steps) or (p.at_step >= 0 and p.eval_before))


EVAL_METRICS = ("mem_ratio", "precision", "recall", "fd", "fid", "nll", "d_ratio_p50",
                "nll_excess", "energy_distance", "test_nll", "train_nll", "nll_gap")


def evaluate_now(run, name=None, top_level=True):
  """Samples the current EMA weights and measures them.

  Every evaluation goes into eval.json's "by_step" and metrics.jsonl (eval/...);
  with top_level it is also the file's summary (or its section `name`) and
  draws report/.
  """
  config = run.config
  step = int(run.state["step"])
  log.info("evaluating %d samples of the EMA weights at step %d", config.eval.num, step)
  summary, extras = evaluate.evaluate(config, run.setup, run.state["ema"], run.dataset,
                                      config.eval.num, config.seed, run.mesh)
  summary["step"] = step
  sections = {"by_step": {str(step): summary}}
  if top_level:
    evaluate.write_report(run.workdir, run.setup.sched, extras, run.dataset,
                          prefix=f"{name}_" if name else "")
    if name:
      sections[name] = summary
  workdir_lib.write_eval(run.workdir, summary if top_level and not name else None, **sections)
  run.writer.write(step, {f"eval/{k}": summary[k] for k in EVAL_METRICS if k in summary})
  return summary

