"""Measured speedup of a physically pruned DiT against its FLOPs ratio.

  python bench/pruning/prune_speed.py                 # one JSON object per (setting, batch)
  python bench/pruning/prune_speed.py --batches 128   # training at batch 128 only

Training: one jitted step (forward + backward + AdamW + EMA) of the default
config's model. Sampling: a 20-step DDIM loop over 256 images. Everything is
compiled first; base and pruned are timed alternately (so drift in the machine's speed
hits both alike) and the medians compared.

Two FLOPs ratios are printed: `flops_ratio`, the analytic forward matmul FLOPs
per image (dit.flops_per_image, what the README and the report quote), and
`train_step_flops_ratio`, XLA's own count for the compiled training step, which
also holds the optimizer, the EMA and the normalisations that scale with the
parameter count rather than with the matmuls.
"""
import argparse
import json
import os
import sys

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from bench import timing  # noqa: E402
from configs import default  # noqa: E402
from dit_jax import config_check, pruning, sampling, sharding, state as state_lib  # noqa: E402
from dit_jax.models import dit  # noqa: E402

SETTINGS = [(0.25, 0.0), (0.25, 0.5), (0.5, 0.5), (0.5, 0.75)]  # (head ratio, MLP ratio)


def sample_runner(config, arch, num=256):
  setup = state_lib.make_setup(config, arch)
  params = state_lib.init_state(setup, jax.random.PRNGKey(0))["ema"]
  scfg = config.sample.copy_and_resolve_references()
  scfg.steps = 20
  sampler = sampling.make_sampler(setup, scfg, num, (-1.0, 1.0))
  return lambda: sampler(params, jax.random.PRNGKey(1))


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--batches", default="32,512",
                  help="comma-separated training batch sizes (default 32, the default "
                  "config's, and 512)")
  ap.add_argument("--reps", type=int, default=7,
                  help="timed repeats (each max(5, 2048 // batch) training steps)")
  args = ap.parse_args()
  batches = [int(b) for b in args.batches.split(",")]
  config = config_check.finalize(default.get_config())
  mesh = sharding.make_mesh()
  base = dit.arch_from_config(config.model, config.data.image_size, config.data.channels, 0)
  base_train = {b: timing.train_call(config, base, mesh, b) for b in batches}
  base_sample = sample_runner(config, base)
  rng = np.random.default_rng(0)
  scores = ([rng.random(h) for h in base.heads], [rng.random(m) for m in base.mlp])
  for ratio, mlp_ratio in SETTINGS:
    keep_h, keep_m = pruning.plan(scores, ratio, mlp_ratio)
    arch, _ = pruning.surgery(base, {"params": {}, "ema": {}, "opt_state": {}}, keep_h, keep_m)
    flops_ratio = dit.flops_per_image(base) / dit.flops_per_image(arch)
    s0, s1 = timing.paired(base_sample, sample_runner(config, arch), max(args.reps // 2, 2))
    for b in batches:
      (run0, f0), (run1, f1) = base_train[b], timing.train_call(config, arch, mesh, b)
      t0, t1 = (t / timing.steps_per_call(b) for t in timing.paired(run0, run1, args.reps))
      print(json.dumps({
          "bench": "prune_speed", "device": jax.devices()[0].device_kind,
          "batch": b, "heads": list(arch.heads), "mlp": list(arch.mlp),
          "head_ratio": ratio, "mlp_ratio": mlp_ratio, "params": dit.num_params(arch),
          "params_base": dit.num_params(base), "flops_ratio": round(flops_ratio, 4),
          "train_step_flops_ratio": round(f0 / f1, 4),
          "train_step_s": round(t1, 5), "train_step_s_base": round(t0, 5),
          "train_speedup": round(t0 / t1, 4), "sample_speedup": round(s0 / s1, 4),
          "train_speedup_over_flops_ratio": round(t0 / t1 / flops_ratio, 4),
          "sample_speedup_over_flops_ratio": round(s0 / s1 / flops_ratio, 4)}),
          flush=True)


if __name__ == "__main__":
  main()
