"""What every bench times the same way: dit_jax's train step, and medians of repeats.

The train step is set up as the loop sets it up (state initialised already sharded,
the step jitted with donation over the mesh) and run as the loop runs it (one step in
flight: a step is dispatched before the previous step's loss is read), so a bench
times what a run pays. Timings are medians: one slow repeat (another process waking
up on a 2-core machine) does not move them.
"""
import time

import jax
import jax.numpy as jnp
import numpy as np

from dit_jax import sharding, state as state_lib, train_step


class TrainSteps:
  """dit_jax's jitted train step on one fixed host batch (a dict with "x", maybe "y")."""

  def __init__(self, config, arch, batch, mesh, params=None):
    self.setup = state_lib.make_setup(config, arch)
    abstract = state_lib.abstract_state(self.setup, mesh)
    self.state = jax.jit(lambda k: state_lib.init_state(self.setup, k),
                         out_shardings=jax.tree.map(lambda x: x.sharding, abstract))(
                             jax.random.PRNGKey(0))
    if params is not None:  # given weights (e.g. the ones torch also runs): fresh Adam, EMA
      self.state = jax.device_put(
          dict(self.state, params=params, ema=jax.tree.map(jnp.copy, params),
               opt_state=self.setup.tx.init(params)), sharding.shardings_of(self.state, mesh))
    self.fn = train_step.jit_train_step(self.setup, config,
                                        sharding.shardings_of(self.state, mesh), mesh)
    self.batch = sharding.put_batch(batch, mesh)
    self.pending = None

  def step(self):
    """Dispatches one step, then reads the previous step's loss (a host sync)."""
    self.state, metrics = self.fn(self.state, self.batch)
    if self.pending is not None:
      float(self.pending["train/loss"])
    self.pending = metrics
    return metrics

  def run(self, n):
    """n steps; returns the last one's loss, not yet waited for."""
    for _ in range(n):
      metrics = self.step()
    return metrics["train/loss"]

  def finish(self):
    """Waits for the last dispatched step."""
    jax.block_until_ready(self.pending)

  def xla_flops(self):
    """XLA's FLOP count of one compiled step (nan where the backend gives none)."""
    cost = self.fn.lower(self.state, self.batch).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", float("nan"))) if cost else float("nan")


def steps_per_call(batch):
  """Train steps per timed call: enough that small batches run for ~1 s a call."""
  return max(5, 2048 // batch)


def train_call(config, arch, mesh, batch):
  """(a function running steps_per_call(batch) train steps on a fixed batch of noise,
  XLA's FLOPs of one step): what two models' training speeds are compared with."""
  x = np.random.default_rng(0).normal(size=(batch, arch.image_size, arch.image_size,
                                            arch.channels)).astype(np.float32)
  steps = TrainSteps(config, arch, {"x": x}, mesh)
  return lambda: steps.run(steps_per_call(batch)), steps.xla_flops()


def median_s(fn, reps, warmup=1):
  """Median seconds of fn() over `reps` calls, each waited for, after `warmup` untimed."""
  for _ in range(warmup):
    jax.block_until_ready(fn())
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def paired(fn_a, fn_b, reps):
  """Median seconds of fn_a and of fn_b, timed alternately so drift hits both alike."""
  jax.block_until_ready(fn_a())
  jax.block_until_ready(fn_b())
  ta, tb = [], []
  for _ in range(reps):
    for fn, out in ((fn_a, ta), (fn_b, tb)):
      out.append(median_s(fn, 1, warmup=0))
  return float(np.median(ta)), float(np.median(tb))


def matmul_gflops(n, reps=10):
  """fp32 n x n matmul throughput of jnp.dot, jitted: the stack's own ceiling."""
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
  mm = jax.jit(jnp.dot)
  return 2 * n ** 3 / median_s(lambda: mm(a, a), reps) / 1e9
