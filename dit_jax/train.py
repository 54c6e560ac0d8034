"""The training loop: `train_and_evaluate(config, workdir)`.

One pure, jitted step with buffer donation over a data-parallel mesh; periodic
work (logging, checkpoints, sample grids, memorization tracking, evaluations,
the prune) are plain hooks called between steps (dit_jax.hooks). Runs resume
from the newest checkpoint in workdir.
"""
import logging
import os
import signal
import sys
import time

import jax
import numpy as np
import tqdm
from jax.experimental import multihost_utils

from dit_jax import checkpointing
from dit_jax import config_check
from dit_jax import data as data_lib
from dit_jax import distributed
from dit_jax import hooks as hooks_lib
from dit_jax import evaluate
from dit_jax import latents
from dit_jax import memorization
from dit_jax import pruning
from dit_jax import sharding
from dit_jax import state as state_lib
from dit_jax import train_step
from dit_jax import workdir as workdir_lib
from dit_jax import workdir_lock
from dit_jax import writers
from dit_jax.configlib import ConfigError
from dit_jax.models import dit

log = logging.getLogger("dit_jax")


class StoppedEarly(Exception):
  """A stop (SIGTERM, a preemption notice) before the configured end of a command
  that runs several trainings (a sweep); their checkpoints are saved."""


class Run:
  """Mutable bits of one training run shared by the loop and its hooks."""

  def __init__(self, config, workdir, dataset, setup, mesh, ckpt):
    self.config, self.workdir, self.dataset = config, workdir, dataset
    self.setup, self.mesh, self.ckpt = setup, mesh, ckpt
    self.writer = None
    self.base_arch = setup.arch
    self.state = None
    self.state_sh = None
    self.step_fn = None
    self.timings = {}
    self.stop_requested = False
    self.summary = None
    self.pruned = None  # the prune record once this run's model has been pruned
    self.before = None  # evaluation of the model just before pruning
    self.control = None  # evaluation of the unpruned control fine-tuned equally
    self.tracker_stop = None  # {step, metric, reading, threshold} once memo.stop_at ends training

  def set_state(self, state, setup=None):
    """Installs a state (and a new architecture) and re-jits the step."""
    if setup is not None:
      self.setup = setup
    self.state_sh = sharding.shardings_of(state, self.mesh)
    self.state = jax.device_put(state, self.state_sh)
    self.step_fn = train_step.jit_train_step(self.setup, self.config, self.state_sh, self.mesh)

  def meta(self, step):
    return {"arch": self.setup.arch.to_json(), "base_arch": self.base_arch.to_json(),
            "run": workdir_lib.run_fingerprint(self.config),
            "step": int(step), "data_position": int(step) * self.config.train.batch_size,
            "data": self.dataset.info["name"], "value_range": self.dataset.info["value_range"],
            "pruned": self.pruned, "tracker_stop": self.tracker_stop}

  def save(self, step, force=False):
    if step not in self.ckpt.all_steps():  # a stop may land on a checkpoint step
      self.ckpt.save(step, self.state, self.meta(step), force=force)


def restore(run, key):
  """(step, state, meta) of the newest readable checkpoint of the run's workdir, or None.

  Damaged newer steps are skipped with a warning and moved aside, never deleted.
  """
  ckpt, config = run.ckpt, run.config
  def abstract_for(meta):  # each step carries its own architecture (pruning changes it)
    workdir_lib.check_fingerprint(meta.get("run"), config, ckpt.directory)
    if meta["base_arch"] != run.base_arch.to_json():
      raise ConfigError(
          f"{ckpt.directory} holds checkpoints of architecture {meta['base_arch']}, but the "
          f"config asks for {run.base_arch.to_json()}. Use the config the run was started "
          "with, or a new --workdir (nothing in this one was changed).")
    setup = state_lib.make_setup(config, dit.Arch.from_json(meta["arch"]))
    return state_lib.abstract_state(setup, run.mesh, key)

  return ckpt.restore_latest(abstract_for)


def _restore_or_init(run, key):
  """Resumes from the newest readable checkpoint when there is one, else a sharded init."""
  restored = restore(run, key)
  if restored is None:
    abstract = state_lib.abstract_state(run.setup, run.mesh, key)
    shardings = jax.tree.map(lambda x: x.sharding, abstract)
    state = jax.jit(lambda k: state_lib.init_state(run.setup, k), out_shardings=shardings)(key)
    run.set_state(state)
    log.info("no checkpoint in %s: starting from step 0", run.ckpt.directory)
    return 0
  step, state, meta = restored
  run.setup = state_lib.make_setup(run.config, dit.Arch.from_json(meta["arch"]))
  run.set_state(state)
  run.pruned = meta["pruned"]
  run.tracker_stop = meta.get("tracker_stop")
  log.info("resumed from step %d of %s", step, run.ckpt.directory)
  return int(step)


def _batch_seed(config, step):
  """The seed of step's batch: the run's, or after a prune config.prune.finetune_seed's."""
  p = config.prune
  if p.finetune_seed < 0 or p.at_step < 0 or step <= p.at_step:
    return config.seed
  return pruning.derived_seed(config.seed, 1 + p.finetune_seed)


def _check_finite(step, loss):
  """Host-device sync point: reads one scalar of an already finished step."""
  if not np.isfinite(float(loss)):
    raise train_step.NonFiniteLossError(
        f"non-finite train/loss ({float(loss)}) at step {step}; the run stopped and the "
        "last good checkpoint was kept. Lower config.train.lr or check the data.")


def train_and_evaluate(config, workdir, extra_hooks=()):
  """Trains (or resumes) a DiT per `config` in `workdir`, then evaluates; returns the Run.

  One seed: config.seeds > 1 trains in dit_jax.seeds.train_and_evaluate, which takes
  any config.seeds (scripts/train.py calls it).
  """
  if config.seeds != 1:
    raise ConfigError(f"config.seeds={config.seeds}: train.train_and_evaluate trains one "
                      "seed; call dit_jax.seeds.train_and_evaluate (any config.seeds), or set "
                      "config.seeds=1.")
  workdir_lib.check_local(workdir)
  config = config_check.finalize(config)
  workdir = os.path.abspath(workdir)  # orbax needs absolute paths
  mesh = sharding.make_mesh(config.mesh)
  config_check.validate(config, sharding.batch_devices(mesh))
  dataset = data_lib.load(config.data, config.seed)
  # labels condition the model only when asked: memorization is studied unconditionally
  num_classes = dataset.num_classes if config.data.conditional else 0
  arch = dit.arch_from_config(config.model, latents.model_image_size(config.data),
                              dataset.train_x.shape[-1], num_classes)
  if hooks_lib.will_evaluate(config):  # missing FID weights fail here, not after hours of training
    evaluate.fid_network(config, dataset)
  # one run per workdir; a read-only, full or taken workdir fails here, before any compile.
  # A checkpoint holds params, EMA and Adam's two moments in float32: 16 bytes a parameter.
  lock = workdir_lock.acquire(workdir, need_bytes=16 * dit.num_params(arch),
                             process_index=jax.process_index())
  ckpt = None
  try:
    ckpt = checkpointing.Checkpointer(workdir_lib.path(workdir, workdir_lib.CHECKPOINTS),
                                      config.checkpoint.keep, cleanup=True)
    run = Run(config, workdir, dataset, state_lib.make_setup(config, arch), mesh, ckpt)
    start = _restore_or_init(run, jax.random.PRNGKey(config.seed))
    workdir_lib.write_config(config, workdir)
    run.writer = writers.MetricWriter(workdir, resume_step=start)
    try:
      _loop(run, start, extra_hooks)
      if not run.stop_requested:  # a record of an earlier stop that no longer holds goes
        workdir_lib.write_eval(workdir, tracker_stop=run.tracker_stop)
      # still holding the workdir lock
      if hooks_lib.evaluates_at_end(config) and not run.stop_requested:
        run.summary = evaluate_at_end(run)
      record_finished(run)
    except BaseException:
      # a full disk fails the event file's last flush too; keep the first error visible
      run.writer.close(quiet=True)
      raise
    run.writer.close()
  finally:
    if ckpt is not None:
      ckpt.close()
    workdir_lock.release(lock)
  return run


def _loop(run, start, extra_hooks):
  """Steps from `start` to config.train.steps, with the hooks between steps.

  SIGTERM asks for a checkpoint and a stop from the moment the loop is entered,
  set-up included.
  """
  previous = _install_sigterm(run)
  try:
    _steps(run, start, extra_hooks)
  finally:
    if previous is not None:
      signal.signal(signal.SIGTERM, previous)


def _resumed_after_tracker_stop(run, start):
  """Whether the checkpoint resumed from is a tracker stop that still holds: the same
  or a lower memo.stop_at ends training there again; a higher one (or 0) goes on."""
  record = run.tracker_stop
  if record is None:
    return False
  threshold = run.config.memo.stop_at
  if memorization.stop_holds(record, threshold):
    log.info("step %d is where the tracker stopped this run (%s %.3f >= memo.stop_at=%g): "
             "nothing more to train", start, record["metric"], record["reading"], threshold)
    return True
  log.info("the tracker stopped this run at step %d (%s %.3f); memo.stop_at=%g lets it go "
           "on", start, record["metric"], record["reading"], threshold)
  run.tracker_stop = None
  return False


def _steps(run, start, extra_hooks):
  config = run.config
  if _resumed_after_tracker_stop(run, start):
    return
  if run.pruned is None and start == config.prune.at_step:  # resumed right at the prune
    hooks_lib.prune_now(run, start)
    if start in config.eval.at_steps:  # the pruned model before any fine-tuning
      hooks_lib.evaluate_now(run, top_level=False)
  log.info("%s: %d params, %.2f MFLOPs/image, %d train images, from step %d",
           config.model.variant, dit.num_params(run.setup.arch),
           dit.flops_per_image(run.setup.arch) / 1e6, len(run.dataset.train_x), start)
  hooks = hooks_lib.make_hooks(run) + list(extra_hooks)
  distributed.barrier(f"dit_jax_loop_{start}")  # every process restored and ready
  # a log file (a sweep in the background) gets a line a minute, a terminal a live bar
  bar = tqdm.tqdm(total=config.train.steps, initial=start, desc="train", unit="step",
                  dynamic_ncols=True, mininterval=1.0 if sys.stderr.isatty() else 60.0,
                  disable=not workdir_lib.is_writer())
  pending = None
  try:
    for step in range(start + 1, config.train.steps + 1):
      batch = train_step.get_batch(run.dataset, _batch_seed(config, step), step - 1,
                                   config.train.batch_size, run.mesh,
                                   labels=bool(run.setup.arch.num_classes))
      run.state, metrics = run.step_fn(run.state, sharding.put_batch(batch, run.mesh))
      if pending is not None:  # checked one step late so dispatch stays asynchronous
        _check_finite(*pending)
      pending = (step, metrics["train/loss"])
      bar.update(1)
      if step % config.log_every == 0:
        bar.set_postfix(loss=f"{float(metrics['train/loss']):.4f}")
      if step % config.checkpoint.every == 0 or step == config.train.steps:
        _check_finite(*pending)  # never checkpoint a diverged state
      for name, hook in hooks:
        t0 = time.perf_counter()
        hook(step, metrics)
        run.timings[name] = run.timings.get(name, 0.0) + time.perf_counter() - t0
      if run.tracker_stop is not None:  # a planned end: its checkpoint records why
        _check_finite(*pending)
        run.save(step, force=True)
        log.info("the tracker's %s reached %.3f >= memo.stop_at=%g at step %d: training "
                 "stops here", run.tracker_stop["metric"], run.tracker_stop["reading"],
                 run.tracker_stop["threshold"], step)
        break
      if _stop_now(run, step):
        _check_finite(*pending)
        run.stop_requested = True
        run.save(step, force=True)
        log.warning("stop requested: checkpoint at step %d written, exiting", step)
        break
    if pending is not None:
      _check_finite(*pending)
  finally:
    bar.close()


STOP_SYNC_EVERY = 10  # steps between the processes' agreement on a requested stop


def _stop_now(run, step):
  """Whether to checkpoint and stop after this step, the same answer on every process.

  A SIGTERM reaches one host; the hosts compare their flags every
  STOP_SYNC_EVERY steps (one tiny all-gather), so all of them save the same step
  and exit instead of waiting in a collective for a host that has gone.
  Preemption notices come through orbax, which already agrees across hosts.
  """
  if run.ckpt.reached_preemption(step):
    return True
  if jax.process_count() == 1:
    return run.stop_requested
  if step % STOP_SYNC_EVERY:
    return False
  flags = multihost_utils.process_allgather(np.asarray(run.stop_requested))
  return bool(np.any(flags))


def evaluate_at_end(run):
  """The end of a run: its evaluation and, for a pruned run, the prune record, the
  control (trained here, resumable) and the before/after report."""
  summary = hooks_lib.evaluate_now(run)
  if run.pruned is None:
    return summary
  workdir_lib.write_eval(run.workdir, prune=run.pruned)
  if run.before is None:  # evaluated before an interruption: eval.json kept it
    run.before = workdir_lib.read_eval(run.workdir).get("before_prune")
  if run.config.prune.control:
    log.info("the control: the unpruned model fine-tuned the same %d steps",
             run.config.train.steps - run.pruned["step"])
    control = train_and_evaluate(hooks_lib.control_config(run.config),
                                 workdir_lib.path(run.workdir, workdir_lib.CONTROL))
    if control.stop_requested:  # this run is not finished until its control is
      run.stop_requested = True
      workdir_lib.write_eval(run.workdir, control=_unfinished_section(control))
      return summary
    run.control = control.summary
    workdir_lib.write_eval(run.workdir, control=run.control)
  evaluate.write_before_after(run.workdir, run.before, summary, run.pruned, run.control)
  return summary


def _unfinished_section(run):
  """What eval.json holds in place of a section whose run was stopped: never a null
  or an older value that would read as a finished one."""
  return {"finished": False, "step": int(run.state["step"]), "steps": run.config.train.steps}


def record_finished(run):
  """eval.json's `unfinished` section while the run has not reached its configured end
  (training, the end evaluation, the control); gone once it has."""
  if not run.stop_requested:
    workdir_lib.write_eval(run.workdir, unfinished=None)
    return
  config = run.config
  ends = ["summary"] if hooks_lib.evaluates_at_end(config) and run.summary is None else []
  if config.prune.at_step >= 0 and config.prune.control and run.control is None:
    ends.append(workdir_lib.CONTROL)
  workdir_lib.write_eval(run.workdir, unfinished=dict(_unfinished_section(run), sections=ends))
  log.warning("stopped before the configured end (step %d of %d); eval.json marks %s as "
              "unfinished. Run the same command again to finish.", int(run.state["step"]),
              config.train.steps, ", ".join(ends) or "nothing")


def _install_sigterm(run):
  """SIGTERM (preemption, kill) asks the loop to checkpoint and stop after this step."""
  def handler(signum, frame):
    run.stop_requested = True
  try:
    return signal.signal(signal.SIGTERM, handler)
  except ValueError:  # not the main thread: leave signals to the caller
    return None
