"""The training loop: `train_and_evaluate(config, workdir)`.

One pure, jitted step with buffer donation over a data-parallel mesh; periodic
work (logging, checkpoints, sample grids, memorization tracking) are plain
hooks called between steps. Runs resume from the newest checkpoint in workdir.
"""
import dataclasses
import json
import logging

log = logging.getLogger("dit_jax")
import os
import signal
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm

from dit_jax import checkpointing
from dit_jax import configlib
from dit_jax import data as data_lib
from dit_jax import diffusion
from dit_jax import report
from dit_jax import sharding
from dit_jax import writers
from dit_jax.models import dit


class NonFiniteLossError(FloatingPointError):
  pass


def lr_schedule(tcfg, total_steps):
  warmup = min(int(tcfg.warmup_steps), max(total_steps - 1, 0))
  if tcfg.lr_schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(
        0.0, tcfg.lr, warmup_steps=warmup, decay_steps=max(total_steps, warmup + 1))
  return optax.join_schedules(
      [optax.linear_schedule(0.0, tcfg.lr, max(warmup, 1)), optax.constant_schedule(tcfg.lr)],
      [warmup])


def _decay_mask(params):
  """Weight decay on matrices only: not on biases, norms or embeddings."""
  def keep(path, x):
    name = "/".join(str(getattr(k, "key", k)) for k in path)
    return x.ndim >= 2 and "embed" not in name
  return jax.tree_util.tree_map_with_path(keep, params)


def make_optimizer(tcfg, total_steps):
  tx = optax.adamw(lr_schedule(tcfg, total_steps), b1=tcfg.b1, b2=tcfg.b2,
                   weight_decay=tcfg.weight_decay, mask=_decay_mask)
  if tcfg.grad_clip and tcfg.grad_clip > 0:
    tx = optax.chain(optax.clip_by_global_norm(tcfg.grad_clip), tx)
  return tx


@dataclasses.dataclass(frozen=True)
class Setup:
  """What the step functions close over; rebuilt when the architecture changes."""
  arch: dit.Arch
  graphdef: object
  sched: diffusion.Schedule
  tx: optax.GradientTransformation


def make_setup(config, arch):
  graphdef, _ = dit.abstract_model(arch)
  return Setup(arch, graphdef, diffusion.schedule_from_config(config.diffusion),
               make_optimizer(config.train, config.train.steps))


def init_state(setup, key):
  params = dit.init_params(setup.arch, jax.random.fold_in(key, 0))
  return {"params": params,
          "ema": jax.tree.map(jnp.copy, params),
          "opt_state": setup.tx.init(params),
          "step": jnp.zeros((), jnp.int32),
          "rng": jax.random.fold_in(key, 1)}


def make_eps_fn(setup, params, y=None):
  """eps_hat(x_t, t) in schedule time, for losses and samplers."""
  return lambda x, t: dit.apply(setup.graphdef, params, x, setup.sched.net_time(t), y)


def train_step(setup, config, state, batch):
  key = jax.random.fold_in(state["rng"], state["step"])
  k_drop, k_loss = jax.random.split(key)
  y = batch.get("y")
  if y is not None and setup.arch.num_classes:  # label dropout for guidance
    drop = jax.random.bernoulli(k_drop, config.model.class_dropout, y.shape)
    y = jnp.where(drop, setup.arch.num_classes, y)

  def loss_fn(params):
    return diffusion.loss(make_eps_fn(setup, params, y), setup.sched, batch["x"], k_loss,
                          config.diffusion.weighting)

  loss, grads = jax.value_and_grad(loss_fn)(state["params"])
  updates, opt_state = setup.tx.update(grads, state["opt_state"], state["params"])
  params = optax.apply_updates(state["params"], updates)
  d = config.train.ema_decay
  ema = jax.tree.map(lambda e, p: d * e + (1 - d) * p, state["ema"], params)
  new_state = dict(state, params=params, ema=ema, opt_state=opt_state,
                   step=state["step"] + 1)
  metrics = {"train/loss": loss, "train/grad_norm": optax.tree.norm(grads),
             "train/param_norm": optax.tree.norm(params)}
  return new_state, metrics


def jit_train_step(setup, config, state_sh, mesh):
  return jax.jit(lambda s, b: train_step(setup, config, s, b),
                 in_shardings=(state_sh, sharding.batch_sharding(mesh)),
                 out_shardings=(state_sh, sharding.replicated(mesh)),
                 donate_argnums=0)


def make_sampler(setup, scfg, num, value_range):
  """Jitted (params, key) -> num samples; random labels when conditional."""
  arch = setup.arch
  shape = (num, arch.image_size, arch.image_size, arch.channels)

  def run(params, key):
    ky, ks = jax.random.split(key)
    if arch.num_classes:
      y = jax.random.randint(ky, (num,), 0, arch.num_classes)
      cond, uncond = make_eps_fn(setup, params, y), make_eps_fn(setup, params)
      w = scfg.guidance
      eps_fn = lambda x, t: uncond(x, t) + w * (cond(x, t) - uncond(x, t))
    else:
      eps_fn = make_eps_fn(setup, params)
    return diffusion.sample(eps_fn, setup.sched, ks, shape, method=scfg.method,
                            steps=scfg.steps, clip=value_range)
  return jax.jit(run)


def get_batch(dataset, seed, step, batch_size, labels=False):
  """The global batch of `step`, this process's rows only."""
  idx = data_lib.batch_indices(seed, step, len(dataset.train_x), batch_size)
  idx = np.array_split(idx, jax.process_count())[jax.process_index()]
  batch = {"x": dataset.train_x[idx]}
  if labels:
    batch["y"] = dataset.train_y[idx].astype(np.int32)
  return batch


def _write_config(config, workdir):
  """Writes config.json; an older, different one is kept beside it, never lost."""
  path = os.path.join(workdir, "config.json")
  text = config.to_json_best_effort(indent=2, sort_keys=True)
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      old = f.read()
    if old != text:
      os.replace(path, os.path.join(workdir, f"config.{int(time.time())}.json"))
  with open(path, "w", encoding="utf-8") as f:
    f.write(text)


class Run:
  """Mutable bits of one training run shared by the loop and its hooks."""

  def __init__(self, config, workdir, dataset, setup, mesh, ckpt, writer):
    self.config, self.workdir, self.dataset = config, workdir, dataset
    self.setup, self.mesh, self.ckpt, self.writer = setup, mesh, ckpt, writer
    self.base_arch = setup.arch
    self.state = None
    self.state_sh = None
    self.step_fn = None
    self.timings = {}
    self.stop_requested = False

  def set_state(self, state, setup=None):
    """Installs a state (and a new architecture) and re-jits the step."""
    if setup is not None:
      self.setup = setup
    self.state_sh = sharding.state_shardings(
        jax.eval_shape(lambda: state), self.mesh, self.config.mesh.fsdp)
    self.state = jax.device_put(state, self.state_sh)
    self.step_fn = jit_train_step(self.setup, self.config, self.state_sh, self.mesh)

  def meta(self, step):
    return {"arch": self.setup.arch.to_json(), "base_arch": self.base_arch.to_json(),
            "step": int(step), "data_position": int(step) * self.config.train.batch_size,
            "data": self.dataset.info.get("name"),
            "value_range": self.dataset.info.get("value_range")}

  def save(self, step, force=False):
    if step not in self.ckpt.all_steps():  # a stop may land on a checkpoint step
      self.ckpt.save(step, self.state, self.meta(step), force=force)


def _restore_or_init(run, key):
  """Resumes from the newest checkpoint when there is one, else a sharded init."""
  ckpt, config = run.ckpt, run.config
  step = ckpt.latest_step()
  if step is None:
    abstract = jax.eval_shape(lambda k: init_state(run.setup, k), key)
    shardings = sharding.state_shardings(abstract, run.mesh, config.mesh.fsdp)
    state = jax.jit(lambda k: init_state(run.setup, k), out_shardings=shardings)(key)
    run.set_state(state)
    return 0
  meta = ckpt.restore_meta(step)
  if meta["base_arch"] != run.base_arch.to_json():
    raise ValueError(
        f"{ckpt.directory} holds checkpoints of architecture {meta['base_arch']}, but the "
        f"config asks for {run.base_arch.to_json()}. Use the config the run was started "
        "with, or a new --workdir (nothing in this one was changed).")
  setup = make_setup(config, dit.Arch.from_json(meta["arch"]))
  abstract = jax.eval_shape(lambda k: init_state(setup, k), key)
  shardings = sharding.state_shardings(abstract, run.mesh, config.mesh.fsdp)
  state, _ = ckpt.restore(checkpointing.abstract_with_shardings(abstract, shardings), step)
  run.setup = setup
  run.set_state(state)
  log.info("resumed from step %d of %s", step, ckpt.directory)
  return int(step)


def _every(n, step, last):
  return n and n > 0 and (step % n == 0 or step == last)


def make_hooks(run):
  """Periodic work between steps, each a (name, fn(step, metrics)) pair."""
  config = run.config
  total = config.train.steps
  clock = {"t": time.perf_counter(), "step": None}

  def log(step, metrics):
    if not _every(config.log_every, step, total):
      return
    now = time.perf_counter()
    out = {k: float(v) for k, v in jax.device_get(metrics).items()}
    out["train/lr"] = float(lr_schedule(config.train, total)(step - 1))
    if clock["step"] is not None:
      out["train/steps_per_sec"] = (step - clock["step"]) / max(now - clock["t"], 1e-9)
    clock["t"], clock["step"] = now, step
    run.writer.write(step, out)

  samplers = {}

  def samples(step, metrics):
    scfg = config.sample
    if not _every(scfg.every, step, total) or scfg.num <= 0:
      return
    key = (run.setup.arch, scfg.num)
    if key not in samplers:  # the architecture may change after pruning
      samplers[key] = make_sampler(run.setup, scfg, scfg.num, run.dataset.info.get("value_range"))
    x = samplers[key](run.state["ema"], jax.random.PRNGKey(config.seed + 1))
    report.save_grid(jax.device_get(x), os.path.join(run.workdir, "samples", f"step_{step:07d}.png"),
                     run.dataset.info.get("value_range"))

  def checkpoint(step, metrics):
    if step % config.checkpoint.every == 0 or step == total:
      run.save(step)

  return [("log", log), ("samples", samples), ("checkpoint", checkpoint)]


def _check_finite(step, loss):
  """Host-device sync point: reads one scalar of an already finished step."""
  if not np.isfinite(float(loss)):
    raise NonFiniteLossError(
        f"non-finite train/loss ({float(loss)}) at step {step}; the run stopped and the "
        "last good checkpoint was kept. Lower config.train.lr or check the data.")


def train_and_evaluate(config, workdir, extra_hooks=()):
  """Trains (or resumes) a DiT per `config` in `workdir`; returns the final state."""
  config = configlib.finalize(config)
  mesh = sharding.make_mesh()
  configlib.validate(config, mesh.devices.size)
  dataset = data_lib.load(config.data, config.seed)
  # labels condition the model only when asked: memorization is studied unconditionally
  num_classes = dataset.num_classes if config.data.conditional else 0
  arch = dit.arch_from_config(config.model, config.data.image_size,
                              dataset.train_x.shape[-1], num_classes)
  os.makedirs(workdir, exist_ok=True)
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), config.checkpoint.keep)
  run = Run(config, workdir, dataset, make_setup(config, arch), mesh, ckpt, None)
  start = _restore_or_init(run, jax.random.PRNGKey(config.seed))
  _write_config(config, workdir)
  run.writer = writers.MetricWriter(workdir)
  log.info("%s: %d params, %.2f MFLOPs/image, %d train images, from step %d",
               config.model.variant, dit.num_params(run.setup.arch),
               dit.flops_per_image(run.setup.arch) / 1e6, len(dataset.train_x), start)

  hooks = make_hooks(run) + list(extra_hooks)
  previous = _install_sigterm(run)
  bar = tqdm.tqdm(total=config.train.steps, initial=start, desc="train", unit="step",
                  dynamic_ncols=True, mininterval=1.0)
  pending = None
  try:
    for step in range(start + 1, config.train.steps + 1):
      batch = sharding.put_batch(get_batch(dataset, config.seed, step - 1,
                                           config.train.batch_size,
                                           labels=bool(run.setup.arch.num_classes)), mesh)
      run.state, metrics = run.step_fn(run.state, batch)
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
      if run.stop_requested or ckpt.reached_preemption(step):
        _check_finite(*pending)
        run.save(step, force=True)
        log.warning("stop requested: checkpoint at step %d written, exiting", step)
        break
    if pending is not None:
      _check_finite(*pending)
  finally:
    bar.close()
    if previous is not None:
      signal.signal(signal.SIGTERM, previous)
    ckpt.close()
    run.writer.close()
  return run


def _install_sigterm(run):
  """SIGTERM (preemption, kill) asks the loop to checkpoint and stop after this step."""
  def handler(signum, frame):
    run.stop_requested = True
  try:
    return signal.signal(signal.SIGTERM, handler)
  except ValueError:  # not the main thread: leave signals to the caller
    return None


def load_workdir(workdir, step=None):
  """(config, setup, state, meta) of a checkpoint in `workdir`, for inference tools."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: is {workdir!r} a training workdir?")
  with open(path, encoding="utf-8") as f:
    config = configlib.finalize(ml_collections.ConfigDict(json.load(f)))
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"),
                                    config.checkpoint.keep, async_save=False)
  step = ckpt.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"no checkpoint in {workdir}/checkpoints yet.")
  meta = ckpt.restore_meta(step)
  setup = make_setup(config, dit.Arch.from_json(meta["arch"]))
  abstract = jax.eval_shape(lambda k: init_state(setup, k), jax.random.PRNGKey(0))
  state, meta = ckpt.restore(abstract, step)
  ckpt.close()
  return config, setup, state, meta


def sample_to_png(workdir, path, num=64, seed=0, method=None, steps=None, guidance=None):
  """Samples the EMA weights of the newest checkpoint into a grid PNG; returns the step."""
  config, setup, state, meta = load_workdir(workdir)
  scfg = ml_collections.ConfigDict(config.sample.to_dict())
  scfg.method = method or scfg.method
  scfg.steps = steps or scfg.steps
  scfg.guidance = scfg.guidance if guidance is None else guidance
  value_range = meta.get("value_range")
  x = make_sampler(setup, scfg, num, value_range)(state["ema"], jax.random.PRNGKey(seed))
  report.save_grid(jax.device_get(x), path, value_range)
  return meta["step"]
