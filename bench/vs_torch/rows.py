"""The shapes bench/vs_torch/torch_vs_jax.py compares, and their inputs; numpy only.

Both stacks' processes import this, so it imports neither JAX nor torch.
"""
import numpy as np

TINY = dict(variant="tiny/2", image=8, channels=1)
ROWS = [
    dict(name="tiny2_8x8x1_train_b32", kind="train", batch=32, **TINY),
    dict(name="tiny2_8x8x1_train_b128", kind="train", batch=128, **TINY),
    dict(name="w192d6_16x16x3_train_b128", kind="train", variant="tiny/2", hidden=192,
         depth=6, image=16, channels=3, batch=128),
    dict(name="S2_32x32x3_train_b32", kind="train", variant="S/2", image=32, channels=3,
         batch=32),
    dict(name="tiny2_8x8x1_forward_b256", kind="forward", batch=256, **TINY),
    dict(name="tiny2_8x8x1_ddim50_n256", kind="sample", batch=256, steps=50, **TINY),
]
QUICK_ROWS = [
    dict(name="quick_tiny2_train_b32", kind="train", batch=32, **TINY),
    dict(name="quick_tiny2_forward_b32", kind="forward", batch=32, **TINY),
    dict(name="quick_tiny2_ddim5_n32", kind="sample", batch=32, steps=5, **TINY),
]


def row_inputs(row, seed=0):
  """The row's images (NHWC, standard normal) and network times in [0, 1]."""
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((row["batch"], row["image"], row["image"], row["channels"]))
  return x.astype(np.float32), rng.uniform(size=row["batch"]).astype(np.float32)
