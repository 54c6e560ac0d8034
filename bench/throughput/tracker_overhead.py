"""Cost of the memorization gap tracker relative to training, at the default cadence.

  python bench/throughput/tracker_overhead.py            # prints one JSON object
Times a steady-state train step and a steady-state tracker call (both compiled
first) on the default config, and reports tracker time / training time between
two tracker calls.
"""
import argparse
import json
import os
import sys

import jax

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from bench import timing  # noqa: E402
from configs import default  # noqa: E402
from dit_jax import config_check, data, memorization, sharding, state as state_lib  # noqa: E402
from dit_jax import train_step  # noqa: E402
from dit_jax.models import dit  # noqa: E402


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--reps", type=int, default=5, help="timed repeats of each (medians)")
  args = ap.parse_args()
  config = config_check.finalize(default.get_config())
  dataset = data.load(config.data, config.seed)
  arch = dit.arch_from_config(config.model, 8, 1, 0)
  mesh = sharding.make_mesh()
  steps = timing.TrainSteps(config, arch, train_step.get_batch(
      dataset, 0, 0, config.train.batch_size, mesh), mesh)
  step_s = timing.median_s(lambda: steps.run(20), args.reps) / 20
  tracker = memorization.GapTracker(steps.setup.sched, dataset, config.memo.probe,
                                    config.memo.buckets, config.diffusion.weighting)
  make_eps = lambda p: state_lib.make_eps_fn(steps.setup, p)
  call_s = timing.median_s(
      lambda: tracker(arch, make_eps, steps.state["params"], steps.state["ema"]), args.reps)
  every = config.memo.every
  print(json.dumps({
      "bench": "tracker_overhead", "device": jax.devices()[0].device_kind,
      "config": "configs/default.py", "train_step_s": step_s, "tracker_call_s": call_s,
      "memo_every": every, "probe": config.memo.probe, "buckets": config.memo.buckets,
      "overhead_fraction": call_s / (every * step_s), "target": 0.05}))


if __name__ == "__main__":
  main()
