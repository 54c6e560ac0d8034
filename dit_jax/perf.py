"""Throughput: the peak a device can reach, and model FLOP/s utilisation (MFU).

MFU = analytic model FLOPs of the train steps done / (peak FLOP/s x devices x
seconds). A train step costs 3x the forward pass (backward ~2x), from
dit.flops_per_image; remat's recomputation is not counted (it is not model work).
"""
import functools
import logging
import time

import jax
import jax.numpy as jnp

log = logging.getLogger("dit_jax")

# dense bf16 peaks per device (vendor spec sheets), for device kinds jax reports
BF16_PEAK = {"NVIDIA H100 80GB HBM3": 989e12, "NVIDIA H100": 989e12, "NVIDIA H200": 989e12,
             "NVIDIA A100-SXM4-80GB": 312e12, "NVIDIA A100-SXM4-40GB": 312e12,
             "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12,
             "TPU v6 lite": 918e12}


@functools.lru_cache(maxsize=None)
def measured_matmul_peak(dtype="float32", n=2048, reps=10):
  """FLOP/s of an n x n matmul on the default device, measured once per process."""
  a = jnp.ones((n, n), dtype)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  t0 = time.perf_counter()
  for _ in range(reps):
    out = f(a)
  out.block_until_ready()
  return 2 * n ** 3 * reps / (time.perf_counter() - t0)


def peak_flops(configured, dtype):
  """Per-device peak: the configured one, a spec sheet's for a known accelerator in
  bf16, else a matmul measured here (the CPU's, which has no spec number)."""
  if configured > 0:
    return float(configured), "config.train.peak_flops"
  kind = jax.devices()[0].device_kind
  if dtype == "bfloat16" and kind in BF16_PEAK:
    return BF16_PEAK[kind], f"{kind} bf16 spec"
  peak = measured_matmul_peak(dtype)
  log.info("peak FLOP/s for train/mfu: a %s 2048^2 matmul measured %.1f GFLOP/s", dtype,
           peak / 1e9)
  return peak, f"measured {dtype} 2048^2 matmul"


def train_flops_per_step(flops_per_image, batch_size):
  return 3 * flops_per_image * batch_size
