"""Measured speedup of a physically pruned DiT against its FLOPs ratio.

  python bench/prune_speed.py            # prints one JSON object per setting
Training: one jitted step (forward + backward + AdamW) at batch 128. Sampling: a
20-step DDIM loop over 256 images. Both compiled first; medians of repeats.
"""
import json
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import default  # noqa: E402
from dit_jax import configlib, pruning, sharding, state as state_lib, steps  # noqa: E402
from dit_jax.models import dit  # noqa: E402


def timed(fn, reps=5):
  jax.block_until_ready(fn())
  out = []
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    out.append(time.perf_counter() - t0)
  return float(np.median(out))


def costs(config, arch, mesh, batch=128, num=256):
  setup = state_lib.make_setup(config, arch)
  state = state_lib.init_state(setup, jax.random.PRNGKey(0))
  sh = sharding.state_shardings(jax.eval_shape(lambda: state), mesh)
  step_fn = steps.jit_train_step(setup, config, sh, mesh)
  x = np.random.default_rng(0).normal(size=(batch, arch.image_size, arch.image_size,
                                            arch.channels)).astype(np.float32)
  b = sharding.put_batch({"x": x}, mesh)
  holder = {"s": jax.device_put(state, sh)}

  def train5():
    for _ in range(5):
      holder["s"], m = step_fn(holder["s"], b)
    return m["train/loss"]

  scfg = config.sample.copy_and_resolve_references()
  scfg.steps = 20
  sampler = state_lib.make_sampler(setup, scfg, num, (-1.0, 1.0))
  return (timed(train5) / 5,
          timed(lambda: sampler(holder["s"]["ema"], jax.random.PRNGKey(1)), 3))


def main():
  config = configlib.finalize(default.get_config())
  mesh = sharding.make_mesh()
  base = dit.arch_from_config(config.model, 8, 1, 0)
  t_train, t_sample = costs(config, base, mesh)
  rng = np.random.default_rng(0)
  scores = ([rng.random(h) for h in base.heads], [rng.random(m) for m in base.mlp])
  for ratio, mlp_ratio in [(0.25, 0.0), (0.25, 0.5), (0.5, 0.5), (0.5, 0.75)]:
    keep_h, keep_m = pruning.plan(scores, ratio, mlp_ratio)
    arch, _ = pruning.surgery(base, {"params": {}, "ema": {}, "opt_state": {}}, keep_h, keep_m)
    p_train, p_sample = costs(config, arch, mesh)
    flops_ratio = dit.flops_per_image(base) / dit.flops_per_image(arch)
    print(json.dumps({
        "bench": "prune_speed", "device": jax.devices()[0].device_kind,
        "heads": list(arch.heads), "mlp": list(arch.mlp), "head_ratio": ratio,
        "mlp_ratio": mlp_ratio, "params": dit.num_params(arch),
        "params_base": dit.num_params(base), "flops_ratio": flops_ratio,
        "train_speedup": t_train / p_train, "sample_speedup": t_sample / p_sample,
        "train_speedup_over_flops_ratio": t_train / p_train / flops_ratio,
        "sample_speedup_over_flops_ratio": t_sample / p_sample / flops_ratio}))


if __name__ == "__main__":
  main()
