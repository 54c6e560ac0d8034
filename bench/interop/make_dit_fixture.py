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
import math
import os

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def sincos_table(dim, grid):
  """MAE's 2-D table: meshgrid(w, h), so the first half of the channels holds the column."""
  def one_axis(d, pos):
    omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
    angles = pos.reshape(-1)[:, None] * omega[None]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)
  cols, rows = np.meshgrid(np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32))
  return np.concatenate([one_axis(dim // 2, cols), one_axis(dim // 2, rows)], axis=1)


class Attention(nn.Module):
  def __init__(self, dim, heads):
    super().__init__()
    self.heads = heads
    self.qkv = nn.Linear(dim, 3 * dim)
    self.proj = nn.Linear(dim, dim)

  def forward(self, x):
    b, n, d = x.shape
    q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
    o = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(head width)
    return self.proj(o.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
  def __init__(self, dim, width):
    super().__init__()
    self.fc1, self.fc2 = nn.Linear(dim, width), nn.Linear(width, dim)

  def forward(self, x):
    return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


def modulate(x, shift, scale):
  return x * (1 + scale[:, None]) + shift[:, None]


def norm(x):
  return F.layer_norm(x, x.shape[-1:], eps=1e-6)


class Block(nn.Module):
  def __init__(self, dim, heads):
    super().__init__()
    self.attn, self.mlp = Attention(dim, heads), Mlp(dim, 4 * dim)
    self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

  def forward(self, x, c):
    sh1, sc1, g1, sh2, sc2, g2 = self.adaLN_modulation(c).chunk(6, dim=1)
    x = x + g1[:, None] * self.attn(modulate(norm(x), sh1, sc1))
    return x + g2[:, None] * self.mlp(modulate(norm(x), sh2, sc2))


class Final(nn.Module):
  def __init__(self, dim, patch, out):
    super().__init__()
    self.linear = nn.Linear(dim, patch * patch * out)
    self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

  def forward(self, x, c):
    shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
    return self.linear(modulate(norm(x), shift, scale))


class PatchEmbed(nn.Module):
  def __init__(self, channels, dim, patch):
    super().__init__()
    self.proj = nn.Conv2d(channels, dim, patch, stride=patch)

  def forward(self, x):
    return self.proj(x).flatten(2).transpose(1, 2)


class TimeEmbed(nn.Module):
  def __init__(self, dim, freq=256):
    super().__init__()
    self.freq = freq
    self.mlp = nn.Sequential(nn.Linear(freq, dim), nn.SiLU(), nn.Linear(dim, dim))

  def forward(self, t):
    half = self.freq // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]  # the integer step itself
    return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))


class LabelEmbed(nn.Module):
  def __init__(self, classes, dim):
    super().__init__()
    self.embedding_table = nn.Embedding(classes + 1, dim)  # last row: the null class


class DiT(nn.Module):
  def __init__(self, image, channels, patch, dim, depth, heads, classes, learn_sigma):
    super().__init__()
    self.patch, self.out = patch, channels * (2 if learn_sigma else 1)
    self.x_embedder = PatchEmbed(channels, dim, patch)
    grid = image // patch
    self.pos_embed = nn.Parameter(torch.from_numpy(sincos_table(dim, grid)).float()[None],
                                  requires_grad=False)
    self.t_embedder = TimeEmbed(dim)
    self.y_embedder = LabelEmbed(classes, dim)
    self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(depth)])
    self.final_layer = Final(dim, patch, self.out)

  def forward(self, x, t, y):
    h = self.x_embedder(x) + self.pos_embed
    c = self.t_embedder(t) + self.y_embedder.embedding_table(y)
    for block in self.blocks:
      h = block(h, c)
    h = self.final_layer(h, c)
    b, n, _ = h.shape
    g, p = int(math.isqrt(n)), self.patch
    h = h.reshape(b, g, g, p, p, self.out).permute(0, 5, 1, 3, 2, 4)
    return h.reshape(b, self.out, g * p, g * p)


def randomize(model, gen):
  """Nonzero weights of a scale that keeps activations O(1)."""
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name == "pos_embed":
        continue
      fan_in = p.shape[1] * (p[0, 0].numel() if p.ndim == 4 else 1) if p.ndim >= 2 else 16
      p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))


def reference(model, x, t, y):
  with torch.no_grad():
    return model(torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(y)).numpy()


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--out", required=True)
  args = parser.parse_args()
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
