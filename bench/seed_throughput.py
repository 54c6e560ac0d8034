"""Seed-parallel throughput: K seeds in one vmapped step against K single-seed runs.

  python bench/seed_throughput.py                       # steps/s rows, then the family row
  python bench/seed_throughput.py --ks 1,5 --family-steps 0
  python bench/seed_throughput.py --ks 5 --modes map,unrolled --family-steps 0   # other seed axes
Prints JSON lines. A `seed_throughput` row: for one dataset's model (tiny/2 at
batch 32 on digits, and the gmm config's model), model-steps per second (K times
the vmapped step's rate) for each K, and the single-seed loop's own step (K=1,
train_step.jit_train_step) as the baseline it is compared with. A `seed_family`
row: the wall time of training one family of 5 seeds (tracker and checkpoints on,
evaluation off) as 5 sequential single-seed runs and as one config.seeds=5 run,
compiles included: what a sweep pays. Run it on an idle machine; every ratio comes
from one run.
"""
import argparse
import json
import os
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from bench import timing  # noqa: E402
from configs import default, gmm  # noqa: E402
from dit_jax import config_check, configlib, data as data_lib, sharding  # noqa: E402
from dit_jax import seeds as seeds_lib, state as state_lib, train, train_step  # noqa: E402
from dit_jax.models import dit  # noqa: E402

# the models the studies train (tiny/2: 1.3M parameters), not runlocal's smaller one
CONFIGS = {"digits": lambda: default.get_config(), "gmm": lambda: gmm.get_config("n=32")}


def _config(name, data_dir):
  config = configlib.with_overrides(CONFIGS[name](), {
      "train.batch_size": 32, "model.variant": "tiny/2", "prune.at_step": -1})
  if data_dir:
    config.data.data_dir = data_dir
  return config_check.finalize(config)


def _median_rate(fn, steps, repeats):
  """Median over repeats of steps per second of `fn` (dispatches one step)."""
  rates = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = None
    for _ in range(steps):
      out = fn()
    jax.block_until_ready(out)
    rates.append(steps / (time.perf_counter() - t0))
  return float(np.median(rates))


def _seed_axis(mode, step, k):
  """One seed's step over a leading seed axis: vmap (what config.seeds runs), or the
  alternatives measured against it: lax.map (a loop in the program) and `unrolled`
  (k copies of the step side by side in one program)."""
  if mode == "vmap":
    return jax.vmap(step)
  if mode == "map":
    return lambda s, x: jax.lax.map(lambda sx: step(*sx), (s, x))
  def unrolled(s, x):
    outs = [step(jax.tree.map(lambda a: a[i], s), jax.tree.map(lambda a: a[i], x))
            for i in range(k)]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)
  return unrolled


def step_rates(name, ks, steps, repeats, data_dir, mode="vmap"):
  config = _config(name, data_dir)
  mesh = sharding.make_mesh(None, jax.local_devices()[:1])
  dataset = data_lib.load(config.data, 0)
  arch = dit.arch_from_config(config.model, config.data.image_size,
                              dataset.train_x.shape[-1], 0)
  b = config.train.batch_size
  batch_of = lambda seed: train_step.get_batch(dataset, seed, 0, b, mesh)
  single = timing.TrainSteps(config, arch, batch_of(0), mesh)
  single.run(3)
  single.finish()
  base = _median_rate(single.step, steps, repeats)
  row = {"bench": "seed_throughput", "mode": mode, "data": name,
         "variant": config.model.variant,
         "batch": b, "device": jax.devices()[0].device_kind,
         "params": dit.num_params(arch), "single_loop_steps_per_sec": round(base, 2),
         "model_steps_per_sec": {}, "speedup_over_single": {}}
  setup = state_lib.make_setup(config, arch)
  for k in ks:
    keys = jnp.stack([jax.random.PRNGKey(s) for s in range(k)])
    state = jax.jit(jax.vmap(lambda key: state_lib.init_state(setup, key)))(keys)
    batch = jax.device_put({"x": np.stack([batch_of(s)["x"] for s in range(k)])})
    fn = jax.jit(_seed_axis(mode, lambda s, x: train_step.train_step(setup, config, s, x), k),
                 donate_argnums=0)
    holder = [state]

    def one():
      holder[0], metrics = fn(holder[0], batch)
      return metrics["train/loss"]
    for _ in range(3):
      one()
    jax.block_until_ready(holder[0])
    rate = k * _median_rate(one, max(steps // k, 5), repeats)
    row["model_steps_per_sec"][str(k)] = round(rate, 2)
    row["speedup_over_single"][str(k)] = round(rate / base, 2)
  return row


def family_wall(name, seeds, steps, data_dir):
  """Seconds to train `seeds` seeds one after another and together (fresh workdirs)."""
  config = configlib.with_overrides(_config(name, data_dir), {
      "train.steps": steps, "eval.num": 0, "sample.every": 0,
      "checkpoint.every": max(steps // 4, 1), "memo.every": max(steps // 4, 1)})
  out = {"bench": "seed_family", "data": name, "seeds": seeds, "steps": steps,
         "device": jax.devices()[0].device_kind}
  with tempfile.TemporaryDirectory() as tmp:
    t0 = time.perf_counter()
    for s in range(seeds):
      train.train_and_evaluate(configlib.with_overrides(config, {"seed": s}),
                               os.path.join(tmp, f"single_{s}"))
    out["sequential_s"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    seeds_lib.train_and_evaluate(configlib.with_overrides(config, {"seeds": seeds}),
                                 os.path.join(tmp, "together"))
    out["together_s"] = round(time.perf_counter() - t0, 1)
  out["speedup"] = round(out["sequential_s"] / out["together_s"], 2)
  return out


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--data", default="digits,gmm")
  ap.add_argument("--ks", default="1,2,4,5,8,16")
  ap.add_argument("--steps", type=int, default=40, help="timed steps per repeat at K=1")
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--family-steps", type=int, default=500,
                  help="training steps of the 5-seed family row (0: skip it)")
  ap.add_argument("--data-dir", default=None, help="TFDS data dir (default: TFDS's)")
  ap.add_argument("--modes", default="vmap", help="vmap (config.seeds), map, unrolled")
  args = ap.parse_args()
  ks = [int(k) for k in args.ks.split(",")]
  for mode in args.modes.split(","):
    for name in args.data.split(","):
      print(json.dumps(step_rates(name, ks, args.steps, args.repeats, args.data_dir, mode)),
            flush=True)
  if args.family_steps > 0:
    print(json.dumps(family_wall(args.data.split(",")[0], 5, args.family_steps,
                                 args.data_dir)), flush=True)


if __name__ == "__main__":
  main()
