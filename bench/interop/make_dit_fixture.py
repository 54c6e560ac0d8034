"""Writes small facebookresearch/DiT-format checkpoints and their reference outputs.

Runs in a torch venv, never in dit_jax's (torch is no dependency of the project):
  python3 -m venv /tmp/torchref && /tmp/torchref/bin/pip install torch==2.13.0 numpy
  /tmp/torchref/bin/python bench/interop/make_dit_fixture.py --out tests/data/dit_interop

The module below is a from-scratch PyTorch DiT with facebookresearch/DiT's
state-dict key names (x_embedder.proj, pos_embed, t_embedder.mlp.{0,2},
y_embedder.embedding_table, blocks.N.{attn.qkv, attn.proj, mlp.fc1, mlp.fc2,
adaLN_modulation.1}, final_layer.{linear, adaLN_modulation.1}) and its forward
math: timm's attention and tanh-GELU MLP, adaLN-Zero, the MAE sin-cos table whose
first channel half encodes the column, the integer step fed to the timestep
features, and `learn_sigma` doubling the output channels. All weights are random
and nonzero (the real init zeroes adaLN and the output, which would hide errors).

Two files, one per format the importer reads:
  dit_ema.pt    the EMA state dict alone, as download.py serves the released models
                (depth 2, hidden 32, 2 heads, patch 2, 8x8x4, learn_sigma, 10 classes)
  dit_train.pt  a train.py checkpoint: {"model", "ema", "opt", "args"} (depth 1,
                hidden 16, 2 heads, patch 1, 4x4x4, no learn_sigma, 5 classes)
  reference.npz x, t, y and each file's EMA output (NCHW, all output channels)
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True)
  args = parser.parse_args()
  import torch  # after the flags: --help works without torch
  from bench.interop.torch_dit import DiT, randomize, reference
  os.makedirs(args.out, exist_ok=True)
  gen = torch.Generator().manual_seed(0)
  rng = np.random.default_rng(0)
  t = np.array([0, 1, 500, 999], np.int64)

  ema = DiT(image=8, channels=4, patch=2, dim=32, depth=2, heads=2, classes=10,
            learn_sigma=True)
  randomize(ema, gen)
  torch.save(ema.state_dict(), os.path.join(args.out, "dit_ema.pt"))
  x1 = rng.standard_normal((4, 4, 8, 8)).astype(np.float32)
  y1 = np.array([0, 3, 9, 10], np.int64)  # 10: the null class of guidance

  small = dict(image=4, channels=4, patch=1, dim=16, depth=1, heads=2, classes=5,
               learn_sigma=False)
  live, average = DiT(**small), DiT(**small)
  randomize(live, gen)
  randomize(average, gen)
  opt = torch.optim.AdamW(live.parameters(), lr=1e-4, weight_decay=0)
  run_flags = argparse.Namespace(model="DiT-tiny/1", image_size=32, num_classes=5)
  torch.save({"model": live.state_dict(), "ema": average.state_dict(),
              "opt": opt.state_dict(), "args": run_flags},
             os.path.join(args.out, "dit_train.pt"))
  x2 = rng.standard_normal((4, 4, 4, 4)).astype(np.float32)
  y2 = np.array([4, 0, 5, 2], np.int64)

  np.savez(os.path.join(args.out, "reference.npz"), t=t,
           ema_x=x1, ema_y=y1, ema_out=reference(ema, x1, t, y1),
           train_x=x2, train_y=y2, train_out=reference(average, x2, t, y2),
           train_model_out=reference(live, x2, t, y2))
  sizes = {k: os.path.getsize(os.path.join(args.out, k)) for k in sorted(os.listdir(args.out))}
  print(json.dumps(sizes))


if __name__ == "__main__":
  main()
