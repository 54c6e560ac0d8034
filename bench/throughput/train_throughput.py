"""Training throughput and MFU of DiT-S/2 and B/2 on 32x32x3, as the training loop runs.

  python bench/throughput/train_throughput.py                          # S/2 and B/2, bf16, batch 256
  python bench/throughput/train_throughput.py --variants S/2 --batch 32 --dtype float32 --steps 5
Prints one JSON object per variant: images/s, model TFLOP/s and MFU against the
device's peak (a spec sheet's bf16 peak for known accelerators, else a measured
matmul; --peak overrides). The step is dit_jax's own jitted train step (AdamW,
clipping, EMA) over every local device, timed after compilation with one step
in flight, as the loop keeps it. Meant for a GPU or TPU; it runs on a CPU too.
"""
import argparse
import json
import os
import sys
import time

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from bench import timing  # noqa: E402
from dit_jax import config_check, configlib, perf, sharding  # noqa: E402
from dit_jax.models import dit  # noqa: E402


def measure(variant, batch, dtype, steps, peak):
  config = configlib.base_config()
  config.data.name = "crops"  # the project's 32x32x3 dataset (synthetic batches are timed)
  config.data.image_size, config.data.channels = 32, 3
  config.model.variant, config.model.dtype = variant, dtype
  config.train.batch_size = batch
  config = config_check.finalize(config)
  mesh = sharding.make_mesh(config.mesh)
  config_check.validate(config, sharding.batch_devices(mesh))
  arch = dit.arch_from_config(config.model, 32, 3, 0)
  x = np.random.default_rng(0).uniform(-1, 1, (batch, 32, 32, 3)).astype(np.float32)
  train = timing.TrainSteps(config, arch, {"x": x[sharding.process_slice(mesh, batch)]}, mesh)
  t0 = time.perf_counter()
  train.step()
  train.finish()
  compile_s = time.perf_counter() - t0
  train.run(1)  # warm
  train.finish()
  t0 = time.perf_counter()
  loss = train.run(steps)
  train.finish()
  step_s = (time.perf_counter() - t0) / steps
  peak_flops, peak_source = perf.peak_flops(peak, dtype)
  flops = perf.train_flops_per_step(dit.flops_per_image(arch), batch)
  return {"bench": "train_throughput", "variant": variant, "image": "32x32x3", "dtype": dtype,
          "batch": batch, "devices": jax.device_count(),
          "device": jax.devices()[0].device_kind, "params": dit.num_params(arch),
          "step_s": round(step_s, 5), "images_per_sec": round(batch / step_s, 2),
          "model_tflops_per_sec": round(flops / step_s / 1e12, 4),
          "mfu": round(flops / step_s / (peak_flops * jax.device_count()), 4),
          "peak_flops_per_device": peak_flops, "peak_source": peak_source,
          "compile_s": round(compile_s, 1), "loss": float(loss)}


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--variants", default="S/2,B/2")
  ap.add_argument("--batch", type=int, default=256)
  ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
  ap.add_argument("--steps", type=int, default=20, help="timed steps")
  ap.add_argument("--peak", type=float, default=0.0, help="per-device peak FLOP/s (0: auto)")
  args = ap.parse_args()
  for variant in args.variants.split(","):
    print(json.dumps(measure(variant, args.batch, args.dtype, args.steps, args.peak)), flush=True)


if __name__ == "__main__":
  main()
