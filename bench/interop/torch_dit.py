"""A from-scratch PyTorch DiT with facebookresearch/DiT's state-dict key names and
forward math, for bench/interop/make_dit_fixture.py (torch only: never imported by
dit_jax or its tests)."""
import math

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
