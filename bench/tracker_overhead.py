"""Cost of the memorization gap tracker relative to training, at the default cadence.

  python bench/tracker_overhead.py            # prints one JSON object
Times a steady-state train step and a steady-state tracker call (both compiled
first) on the default config, and reports tracker time / training time between
two tracker calls.
"""
import json
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import default  # noqa: E402
from dit_jax import config_check, data, memorization, sharding, state as state_lib, train_step  # noqa: E402
from dit_jax.models import dit  # noqa: E402


def timed(fn, reps):
  fn()  # compile / warm up
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def main():
  config = config_check.finalize(default.get_config())
  dataset = data.load(config.data, config.seed)
  arch = dit.arch_from_config(config.model, 8, 1, 0)
  setup = state_lib.make_setup(config, arch)
  mesh = sharding.make_mesh()
  state = state_lib.init_state(setup, jax.random.PRNGKey(0))
  sh = sharding.shardings_of(state, mesh)
  step_fn = train_step.jit_train_step(setup, config, sh, mesh)
  batch = sharding.put_batch(train_step.get_batch(dataset, 0, 0, config.train.batch_size, mesh),
                            mesh)
  holder = {"s": jax.device_put(state, sh)}

  def one_step():
    holder["s"], m = step_fn(holder["s"], batch)
    return m["train/loss"]

  step_s = timed(lambda: [one_step() for _ in range(20)][-1], 5) / 20
  tracker = memorization.GapTracker(setup.sched, dataset, config.memo.probe,
                                    config.memo.buckets, config.diffusion.weighting)
  make_eps = lambda p: state_lib.make_eps_fn(setup, p)
  call_s = timed(lambda: tracker(arch, make_eps, holder["s"]["params"], holder["s"]["ema"]), 5)
  every = config.memo.every
  print(json.dumps({
      "bench": "tracker_overhead", "device": jax.devices()[0].device_kind,
      "config": "configs/default.py", "train_step_s": step_s, "tracker_call_s": call_s,
      "memo_every": every, "probe": config.memo.probe, "buckets": config.memo.buckets,
      "overhead_fraction": call_s / (every * step_s), "target": 0.05}))


if __name__ == "__main__":
  main()
