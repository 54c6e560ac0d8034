"""Seed-parallel training: runs that differ only in their seed, in one compiled program.

config.seeds = K trains seeds seed, seed + 1, ..., seed + K - 1 together. The train
state (params, EMA, optimizer moments, step, rng) and the batch get a leading seed
axis and the single-seed train step runs under jax.vmap, so each kernel does K
models' work: on small models, where a step is hundreds of tiny kernels and fixed
costs dominate, that is where the throughput is.

Each seed writes what a single-seed run of it writes, in WORKDIR/seed_<s>: the same
training subset, init, batches and noise (config.seed = s), checkpoints with the
same fingerprint, metrics, tracker readings and evaluations. Single-seed tools read
those workdirs, and any of them can be resumed alone (config.seed = s, seeds = 1).
The hooks (logging, tracker, samples, evaluation, checkpoints) are train.py's, run
per seed on that seed's slice of the state, taken only when a hook reads it. The seed
axis is split over the host's devices when their number divides K.
"""
import logging
import os
import signal
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from dit_jax import checkpointing
from dit_jax import config_check
from dit_jax import configlib
from dit_jax import data as data_lib
from dit_jax import evaluate
from dit_jax import hooks as hooks_lib
from dit_jax import latents
from dit_jax import sharding
from dit_jax import state as state_lib
from dit_jax import train
from dit_jax import train_step
from dit_jax import workdir as workdir_lib
from dit_jax import workdir_lock
from dit_jax import writers
from dit_jax.configlib import ConfigError
from dit_jax.models import dit

log = logging.getLogger("dit_jax")

SEED_DIR = "seed_{}"


def seed_list(config):
  return list(range(config.seed, config.seed + config.seeds))


def seed_workdir(workdir, seed):
  """Where seed `seed` of a seed-parallel run in `workdir` keeps its single-seed run."""
  return os.path.join(workdir, SEED_DIR.format(seed))


def one_seed(config, seed):
  """The single-seed config of one seed of a seed-parallel config."""
  return configlib.with_overrides(config, {"seed": seed, "seeds": 1})


def check_config(config, seeds):
  """What seed-parallel training does not do; raised before anything loads or compiles."""
  if config.prune.at_step >= 0:
    raise ConfigError(
        f"config.seeds={seeds} with config.prune.at_step={config.prune.at_step}: "
        "pruned seeds differ in shape and train one at a time; set config.seeds=1, or "
        "train the seeds together unpruned and prune each workdir (scripts/prune.py).")
  if config.memo.stop_at > 0:
    raise ConfigError(
        f"config.seeds={seeds} with config.memo.stop_at={config.memo.stop_at}: seeds "
        "trained together would stop at different steps; set config.seeds=1 (a workdir "
        "per seed), or memo.stop_at=0.")
  if jax.process_count() > 1:
    raise ConfigError(f"config.seeds={seeds} trains on one process; this job has "
                      f"{jax.process_count()}. Set config.seeds=1 for multi-host runs.")


def seed_sharding(seeds, devices):
  """The seed axis split over the local devices when they divide it (no communication:
  each device trains its own seeds), else every seed on the first device."""
  devices = list(devices)
  if len(devices) == 1 or seeds % len(devices):
    if len(devices) > 1:
      log.warning("%d seeds do not split over %d devices: all train on %s; use a multiple "
                  "of %d seeds to use every device", seeds, len(devices), devices[0],
                  len(devices))
    return jax.sharding.SingleDeviceSharding(devices[0])
  mesh = jax.sharding.Mesh(np.asarray(devices), ("seeds",))
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("seeds"))


class Group:
  """The seeds' stacked state, and each seed's slice of it, cut once per state and put
  on the hooks' device."""

  def __init__(self, runs=(), device=None):
    self.runs = list(runs)
    self.device = device
    self.state = None
    self._slices = {}

  def set_state(self, state):
    self.state, self._slices = state, {}

  def slice(self, index):
    if index not in self._slices:
      self._slices[index] = jax.tree.map(lambda x: jax.device_put(x[index], self.device),
                                         self.state)
    return self._slices[index]

  @property
  def stop_requested(self):
    return any(r.stop_requested for r in self.runs)


class SeedRun(train.Run):
  """One seed's Run: its own workdir, data, writer and checkpoints; its state is a
  view of the group's, read-only (pruning, which would change it, is refused)."""

  def __init__(self, group, index, *args):
    self.group, self.index = group, index
    super().__init__(*args)

  @property
  def state(self):
    return None if self.group.state is None else self.group.slice(self.index)

  @state.setter
  def state(self, value):
    if value is not None:
      raise TypeError("a seed's state is a slice of its group's; set the group's state.")


def _restore_or_init(group, setup, placement):
  """The stacked state: every seed resumed from the same step, or every seed fresh."""
  runs = group.runs
  restored = [train.restore(r, jax.random.PRNGKey(r.config.seed)) for r in runs]
  steps = [None if r is None else int(r[0]) for r in restored]
  if len(set(steps)) > 1:
    listing = ", ".join(f"seed {r.config.seed}: {'none' if s is None else s}"
                        for r, s in zip(runs, steps))
    raise ConfigError(
        f"the seeds' workdirs hold different newest checkpoints ({listing}); seeds resume "
        "together from one step. Bring them to one step alone (config.seeds=1, "
        "config.seed=s, same --workdir/seed_<s>), or use a new --workdir.")
  if steps[0] is None:
    keys = jnp.stack([jax.random.PRNGKey(r.config.seed) for r in runs])
    state = jax.jit(jax.vmap(lambda k: state_lib.init_state(setup, k)))(keys)
    log.info("no checkpoints: %d seeds start from step 0", len(runs))
  else:
    for run, (_, _, meta) in zip(runs, restored):
      if meta["pruned"] is not None:
        raise ConfigError(f"{run.ckpt.directory} holds a pruned model; pruned runs train "
                          "one seed at a time (config.seeds=1).")
    state = jax.tree.map(lambda *xs: jnp.stack(xs), *[r[1] for r in restored])
    log.info("%d seeds resumed from step %d", len(runs), steps[0])
  group.set_state(jax.device_put(state, placement))
  return steps[0] or 0


def _batch(runs, step, batch_size, mesh, labels):
  """The seeds' batches of `step` stacked: each the single-seed run's own."""
  batches = [train_step.get_batch(r.dataset, r.config.seed, step - 1, batch_size, mesh,
                                  labels=labels) for r in runs]
  return jax.tree.map(lambda *xs: np.stack(xs), *batches)


def _check_finite(runs, step, losses):
  losses = np.asarray(losses)
  for run, loss in zip(runs, losses):
    if not np.isfinite(loss):
      raise train_step.NonFiniteLossError(
          f"non-finite train/loss ({loss}) at step {step} of seed {run.config.seed}; the "
          "seeds stopped and kept their last good checkpoint. Lower config.train.lr or "
          "check the data.")


def train_and_evaluate(config, workdir):
  """Trains (or resumes) seeds seed .. seed + seeds - 1 of `config` together, each in
  workdir/seed_<s>, then evaluates each; returns the Group of their Runs. With
  config.seeds = 1 it is train.train_and_evaluate (one Run, in workdir itself)."""
  configlib.check_int(config.seeds, "seeds")
  if config.seeds == 1:
    return train.train_and_evaluate(config, workdir)
  workdir_lib.check_local(workdir)
  workdir = os.path.abspath(workdir)
  return train_group([one_seed(config, s) for s in seed_list(config)],
                     [seed_workdir(workdir, s) for s in seed_list(config)])


def check_group(configs):
  """Configs trained together must differ in their seed alone."""
  seeds_of = [c.seed for c in configs]
  if len(set(seeds_of)) != len(seeds_of):
    raise ConfigError(f"seeds trained together must differ; got {seeds_of}.")
  rest = [configlib.with_overrides(c, {"seed": 0}).to_dict() for c in configs]
  for c, r in zip(configs[1:], rest[1:]):
    if r != rest[0]:
      differ = sorted(k for k in set(r) | set(rest[0]) if r.get(k) != rest[0].get(k))
      raise ConfigError(f"configs trained together differ in more than the seed (seed "
                        f"{c.seed}: config sections {differ}); train them apart.")


def train_group(configs, workdirs):
  """Trains (or resumes) single-seed configs that differ only in config.seed together,
  config i in workdirs[i], then evaluates each; returns the Group of their Runs."""
  configs = [config_check.finalize(c) for c in configs]
  for wd in workdirs:
    workdir_lib.check_local(wd)
  workdirs = [os.path.abspath(wd) for wd in workdirs]
  check_group(configs)
  device = jax.local_devices()[0]  # where the hooks (tracker, evaluation) run a seed
  mesh = sharding.make_mesh(None, [device])
  config_check.validate(configs[0], 1)
  check_config(configs[0], len(configs))
  placement = seed_sharding(len(configs), jax.local_devices())
  group, locks, ckpts = Group(device=device), [], []
  try:
    for index, (c, wd) in enumerate(zip(configs, workdirs)):
      dataset = data_lib.load(c.data, c.seed)
      num_classes = dataset.num_classes if c.data.conditional else 0
      arch = dit.arch_from_config(c.model, latents.model_image_size(c.data),
                                  dataset.train_x.shape[-1], num_classes)
      if index == 0 and hooks_lib.will_evaluate(c):  # missing FID weights fail before training
        evaluate.fid_network(c, dataset)
      locks.append(workdir_lock.acquire(wd, need_bytes=16 * dit.num_params(arch),
                                        process_index=jax.process_index()))
      ckpts.append(checkpointing.Checkpointer(
          workdir_lib.path(wd, workdir_lib.CHECKPOINTS), c.checkpoint.keep, cleanup=True))
      setup = state_lib.make_setup(c, arch)
      group.runs.append(SeedRun(group, index, c, wd, dataset, setup, mesh, ckpts[-1]))
    start = _restore_or_init(group, group.runs[0].setup, placement)
    for run in group.runs:
      workdir_lib.write_config(run.config, run.workdir)
      run.writer = writers.MetricWriter(run.workdir, resume_step=start)
    try:
      _loop(group, start, placement)
      for run in group.runs:
        if hooks_lib.evaluates_at_end(run.config) and not group.stop_requested:
          run.summary = train.evaluate_at_end(run)
        train.record_finished(run)
    except BaseException:
      for run in group.runs:
        run.writer.close(quiet=True)
      raise
    for run in group.runs:
      run.writer.close()
  finally:
    for ckpt in ckpts:
      ckpt.close()
    for lock in locks:
      workdir_lock.release(lock)
  return group


def _loop(group, start, placement):
  """Steps from `start` to train.steps; each seed's hooks between steps on its slice."""
  runs = group.runs
  config, setup, mesh = runs[0].config, runs[0].setup, runs[0].mesh
  total, batch_size = config.train.steps, config.train.batch_size
  labels = bool(setup.arch.num_classes)
  step_fn = jax.jit(jax.vmap(lambda s, b: train_step.train_step(setup, config, s, b)),
                    donate_argnums=0)
  hooks = [hooks_lib.make_hooks(run) for run in runs]
  log.info("%s x %d seeds %s: %d params each, %d train images each, from step %d",
           config.model.variant, len(runs), [r.config.seed for r in runs],
           dit.num_params(setup.arch), len(runs[0].dataset.train_x), start)

  def on_sigterm(signum, frame):
    for run in runs:
      run.stop_requested = True
  try:
    previous = signal.signal(signal.SIGTERM, on_sigterm)
  except ValueError:  # not the main thread: leave signals to the caller
    previous = None
  bar = tqdm.tqdm(total=total, initial=start, desc=f"train x{len(runs)}", unit="step",
                  dynamic_ncols=True, mininterval=1.0 if sys.stderr.isatty() else 60.0)
  pending = None
  try:
    for step in range(start + 1, total + 1):
      batch = jax.device_put(_batch(runs, step, batch_size, mesh, labels), placement)
      state, metrics = step_fn(group.state, batch)
      group.set_state(state)
      if pending is not None:  # checked one step late so dispatch stays asynchronous
        _check_finite(runs, *pending)
      pending = (step, metrics["train/loss"])
      bar.update(1)
      logged = step % config.log_every == 0 or step == total
      host = jax.device_get(metrics) if logged else None
      if logged:
        bar.set_postfix(loss=" ".join(f"{v:.4f}" for v in host["train/loss"]))
      if step % config.checkpoint.every == 0 or step == total:
        _check_finite(runs, *pending)  # never checkpoint a diverged state
      for index, run in enumerate(runs):
        seed_metrics = {k: v[index] for k, v in host.items()} if logged else {}
        for name, hook in hooks[index]:
          t0 = time.perf_counter()
          hook(step, seed_metrics)
          run.timings[name] = run.timings.get(name, 0.0) + time.perf_counter() - t0
      if any(r.stop_requested or r.ckpt.reached_preemption(step) for r in runs):
        _check_finite(runs, *pending)
        for run in runs:
          run.stop_requested = True
          run.save(step, force=True)
        log.warning("stop requested: checkpoints at step %d written, exiting", step)
        break
    if pending is not None:
      _check_finite(runs, *pending)
  finally:
    bar.close()
    if previous is not None:
      signal.signal(signal.SIGTERM, previous)
