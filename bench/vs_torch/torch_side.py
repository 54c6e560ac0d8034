"""The PyTorch side of the torch-vs-JAX bench: bench/vs_torch/torch_reference.py per row.

Eager, or torch.compile (default inductor) on the model and loss for training and
on the model for forward and sampling; compile time is spent in `runner` (two calls:
inductor may recompile once when a second call sees, e.g., the optimizer's state).
"""
import time

import numpy as np
import torch

from bench.vs_torch import rows
from bench.vs_torch import torch_reference as ref


def set_threads(n):
  torch.set_num_threads(n)


def arch_json(row, flat_params):
  """The Arch fields torch_reference needs, read off the parameter shapes."""
  blocks = sorted({int(p.split("/")[1]) for p in flat_params if p.startswith("blocks/")})
  qkv = [flat_params[f"blocks/{i}/qkv_w"].shape for i in blocks]
  return {"image_size": row["image"], "channels": row["channels"], "patch":
          int(round((flat_params["patch_w"].shape[0] / row["channels"]) ** 0.5)),
          "hidden": flat_params["patch_w"].shape[1], "head_dim": qkv[0][3],
          "heads": [s[2] for s in qkv],
          "mlp": [flat_params[f"blocks/{i}/fc1_w"].shape[1] for i in blocks],
          "num_classes": 0}


def build(row, flat_params):
  model = ref.DiT(arch_json(row, flat_params))
  count = ref.load(model, flat_params)
  return model, count


def row_inputs(row, seed=0):
  return tuple(torch.from_numpy(a) for a in rows.row_inputs(row, seed))


def runner(row, flat_params, compile_model):
  """(a function running the row once, parameter count); warmed and compiled."""
  model, count = build(row, flat_params)
  x, t = row_inputs(row)
  if row["kind"] == "train":
    trainer = ref.Trainer(model, flat_params, compile=compile_model)
    fn = lambda: trainer.step(x)
  else:
    net = torch.compile(model) if compile_model else model
    if row["kind"] == "forward":
      fn = _no_grad(lambda: net(x, t))
    else:
      gen = torch.Generator().manual_seed(1)
      fn = _no_grad(lambda: ref.ddim_sample(net, torch.randn(x.shape, generator=gen),
                                            steps=row.get("steps", 50)))
  fn()
  fn()
  return fn, count


def _no_grad(fn):
  def run():
    with torch.inference_mode():
      return fn()
  return run


def matmul_gflops(n, reps=10):
  a = torch.randn(n, n)
  torch.mm(a, a)
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    torch.mm(a, a)
    times.append(time.perf_counter() - t0)
  return 2 * n ** 3 / float(np.median(times)) / 1e9
