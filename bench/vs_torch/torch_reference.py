"""A PyTorch DiT of the same function as dit_jax's, for the speed comparison only.

torch is a bench-only extra (`pip install -e '.[bench]'`); nothing in dit_jax imports
this file, and this file imports nothing from JAX, so the torch side of the bench runs
in a process without an XLA runtime. It is written the way a PyTorch user would write
the DiT (nn.Linear, F.scaled_dot_product_attention, torch.optim.AdamW with foreach
updates) and takes its weights from a dit_jax parameter dict (numpy arrays):

- parameters: one torch parameter per dit_jax parameter with as many elements (`load`
  checks it); dit_jax's kernels are (in, out) matrices, nn.Linear's (out, in), and the
  fused qkv kernel D x 3 x H x Dh is nn.Linear(D, 3*H*Dh) whose output splits into
  (3, H, Dh) as in the reference DiT;
- loss: eps-MSE with times uniform over the DDPM linear schedule's 1000 indices;
- optimizer: global-norm clipping at 1.0, then AdamW, with weight decay on the tensors
  dit_jax decays (state._decay_mask: two or more axes there, no "embed" in the name);
  learning rate warmed up linearly from 0 as state.lr_schedule; then the EMA update.
"""
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

FREQ_DIM = 256


def sincos_2d(dim, grid):
  """(grid*grid, dim) fixed 2-D sin-cos position embedding: rows y-major, y then x half."""
  def one_axis(d, pos):
    omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
    out = pos.reshape(-1)[:, None] * omega[None]
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)
  ys, xs = np.meshgrid(np.arange(grid, dtype=np.float64), np.arange(grid, dtype=np.float64),
                       indexing="ij")
  return np.concatenate([one_axis(dim // 2, ys), one_axis(dim // 2, xs)], 1).astype(np.float32)


def timestep_features(t_B, dim=FREQ_DIM, max_period=10000.0):
  """cos then sin of 1000 * t (t the network time in [0, 1]) at geometric frequencies."""
  half = dim // 2
  freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
  args = 1000.0 * t_B.float()[:, None] * freqs[None]
  return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def modulate(x, shift, scale):
  return x * (1 + scale[:, None]) + shift[:, None]


class Block(nn.Module):
  """adaLN-Zero block with its own head count and MLP width."""

  def __init__(self, hidden, head_dim, heads, mlp):
    super().__init__()
    self.heads, self.head_dim = heads, head_dim
    self.ada = nn.Linear(hidden, 6 * hidden)
    self.qkv = nn.Linear(hidden, 3 * heads * head_dim)
    self.out = nn.Linear(heads * head_dim, hidden)
    self.fc1 = nn.Linear(hidden, mlp)
    self.fc2 = nn.Linear(mlp, hidden)

  def forward(self, x, c):
    b, t, d = x.shape
    sh1, sc1, g1, sh2, sc2, g2 = self.ada(F.silu(c)).chunk(6, dim=-1)
    h = modulate(F.layer_norm(x, (d,), eps=1e-6), sh1, sc1)
    q, k, v = self.qkv(h).view(b, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
    o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, -1)
    x = x + g1[:, None] * self.out(o)
    h = modulate(F.layer_norm(x, (d,), eps=1e-6), sh2, sc2)
    return x + g2[:, None] * self.fc2(F.gelu(self.fc1(h), approximate="tanh"))


class DiT(nn.Module):
  """eps_hat(x_t NHWC, network time in [0, 1], label or None), as dit_jax's DiT."""

  def __init__(self, arch):
    super().__init__()
    self.arch = arch
    d, p, c = arch["hidden"], arch["patch"], arch["channels"]
    self.patch = nn.Linear(p * p * c, d)
    self.t1 = nn.Linear(FREQ_DIM, d)
    self.t2 = nn.Linear(d, d)
    if arch["num_classes"]:  # the extra last row is the null label
      self.label_embed = nn.Embedding(arch["num_classes"] + 1, d)
    self.blocks = nn.ModuleList(Block(d, arch["head_dim"], h, m)
                                for h, m in zip(arch["heads"], arch["mlp"]))
    self.final_ada = nn.Linear(d, 2 * d)
    self.final = nn.Linear(d, p * p * c)
    grid = arch["image_size"] // p
    self.register_buffer("pos", torch.from_numpy(sincos_2d(d, grid)), persistent=False)

  def forward(self, x, t, y=None):
    b, hh, ww, ch = x.shape
    p = self.arch["patch"]
    x = x.reshape(b, hh // p, p, ww // p, p, ch).permute(0, 1, 3, 2, 4, 5)
    x = self.patch(x.reshape(b, (hh // p) * (ww // p), p * p * ch)) + self.pos
    c = self.t2(F.silu(self.t1(timestep_features(t))))
    if self.arch["num_classes"]:
      y = torch.full_like(t, self.arch["num_classes"], dtype=torch.long) if y is None else y
      c = c + self.label_embed(y)
    for block in self.blocks:
      x = block(x, c)
    shift, scale = self.final_ada(F.silu(c)).chunk(2, dim=-1)
    x = self.final(modulate(F.layer_norm(x, (x.shape[-1],), eps=1e-6), shift, scale))
    g = hh // p
    x = x.reshape(b, g, g, p, p, ch).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, hh, ww, ch)


def torch_name(path):
  """dit_jax parameter path ("blocks/0/qkv_w") -> this module's ("blocks.0.qkv.weight")."""
  *head, leaf = path.split("/")
  special = {"t_w1": "t1.weight", "t_b1": "t1.bias", "t_w2": "t2.weight", "t_b2": "t2.bias",
             "label_embed": "label_embed.weight"}
  if leaf in special:
    return ".".join(head + [special[leaf]])
  base, kind = leaf.rsplit("_", 1)
  return ".".join(head + [base, {"w": "weight", "b": "bias"}[kind]])


def to_torch_layout(path, array):
  """A dit_jax array in this module's layout: (in, out) kernels become (out, in)."""
  leaf = path.rsplit("/", 1)[-1]
  if leaf == "label_embed":
    return array
  if "_b" in leaf:  # biases: qkv_b's 3 x H x Dh and the rest are already flat
    return array.reshape(-1)
  if leaf == "out_w":  # H x Dh x D: (H*Dh) inputs
    return array.reshape(-1, array.shape[-1]).T
  return array.reshape(array.shape[0], -1).T  # qkv_w D x 3 x H x Dh: D inputs


def load(model, flat_params):
  """Copies a flattened dit_jax parameter dict into `model`; checks the two match.

  Every dit_jax parameter must land on a distinct torch parameter with as many
  elements, and the module may hold nothing else, so the parameter counts are equal.
  """
  named = dict(model.named_parameters())
  seen = set()
  with torch.no_grad():
    for path, array in flat_params.items():
      name = torch_name(path)
      if name not in named:
        raise ValueError(f"dit_jax parameter {path} has no torch counterpart {name}")
      value = torch.from_numpy(np.array(to_torch_layout(path, array)))
      if tuple(value.shape) != tuple(named[name].shape):
        raise ValueError(f"{path} {array.shape} does not fit {name} {tuple(named[name].shape)}")
      named[name].copy_(value)
      seen.add(name)
  extra = sorted(set(named) - seen)
  if extra:
    raise ValueError(f"torch parameters without a dit_jax counterpart: {extra}")
  jax_count = sum(int(a.size) for a in flat_params.values())
  torch_count = sum(p.numel() for p in model.parameters())
  assert jax_count == torch_count, (jax_count, torch_count)
  return torch_count


def decayed(path, array):
  """dit_jax's decay mask: tensors with two or more axes and no "embed" in the name."""
  return array.ndim >= 2 and "embed" not in path


class DDPMLinear:
  """The DDPM linear schedule (betas 1e-4 .. 0.02 over `num_steps`) as dit_jax builds it."""

  def __init__(self, num_steps=1000):
    self.num_steps = num_steps
    alpha_bar = np.cumprod(1.0 - np.linspace(1e-4, 0.02, num_steps, dtype=np.float64))
    ab = torch.from_numpy(alpha_bar.astype(np.float32))
    self.a, self.s = torch.sqrt(ab), torch.sqrt(1.0 - ab)

  def net_time(self, t_idx):
    return t_idx.float() / (self.num_steps - 1)


def eps_loss(model, sched_a, sched_s, num_steps, x0, t_idx, noise):
  """Mean over the batch of the per-image mean squared error of the noise prediction."""
  a, s = sched_a[t_idx][:, None, None, None], sched_s[t_idx][:, None, None, None]
  eps = model(a * x0 + s * noise, t_idx.float() / (num_steps - 1))
  return torch.square(eps - noise).mean(dim=(1, 2, 3)).mean()


class Trainer:
  """One training step as dit_jax's: loss, clip at `grad_clip`, AdamW, EMA.

  `compile=True` wraps the model and loss in torch.compile (default inductor);
  the optimizer and EMA stay eager, as in PyTorch's DiT training loop.
  """

  def __init__(self, model, flat_params, *, lr=1e-3, warmup=200, b1=0.9, b2=0.999,
               weight_decay=0.0, grad_clip=1.0, ema_decay=0.999, compile=False, seed=0):
    self.model, self.sched = model, DDPMLinear()
    self.params = [dict(model.named_parameters())[torch_name(p)] for p in flat_params]
    decay = [decayed(p, a) for p, a in flat_params.items()]
    groups = [{"params": [q for q, d in zip(self.params, decay) if d],
               "weight_decay": weight_decay},
              {"params": [q for q, d in zip(self.params, decay) if not d], "weight_decay": 0.0}]
    self.opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=(b1, b2),
                                 eps=1e-8, foreach=True)
    self.ema = [p.detach().clone() for p in self.params]
    self.lr, self.warmup, self.grad_clip, self.ema_decay = lr, warmup, grad_clip, ema_decay
    self.step_count = 0
    self.gen = torch.Generator().manual_seed(seed)
    loss = lambda x0, t, noise: eps_loss(model, self.sched.a, self.sched.s,
                                         self.sched.num_steps, x0, t, noise)
    self.loss_fn = torch.compile(loss) if compile else loss

  def lr_at(self, step):
    """state.lr_schedule's constant schedule: 0 -> lr linearly over `warmup` steps."""
    return self.lr * min(step / max(self.warmup, 1), 1.0) if self.warmup else self.lr

  def step(self, x0, t_idx=None, noise=None):
    """One optimizer step on images x0 (NHWC); t and noise drawn unless given."""
    if t_idx is None:
      t_idx = torch.randint(0, self.sched.num_steps, (x0.shape[0],), generator=self.gen)
      noise = torch.randn(x0.shape, generator=self.gen)
    loss = self.loss_fn(x0, t_idx, noise)
    self.opt.zero_grad(set_to_none=True)
    loss.backward()
    if self.grad_clip:
      torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip, foreach=True)
    for group in self.opt.param_groups:
      group["lr"] = self.lr_at(self.step_count)
    self.opt.step()
    with torch.no_grad():
      torch._foreach_lerp_(self.ema, self.params, 1.0 - self.ema_decay)
    self.step_count += 1
    return loss.detach()


def ddim_grid(num_steps, steps):
  """Decreasing schedule indices from the noisiest to the cleanest, as dit_jax's grid."""
  return np.round(np.linspace(num_steps - 1, 0, steps)).astype(np.int64)


def ddim_sample(model, x, steps=50, clip=(-1.0, 1.0), sched=None):
  """Deterministic DDIM (eta = 0) from noise x, x0 clipped to `clip`; as diffusion.sample."""
  sched = sched or DDPMLinear()
  ts = torch.from_numpy(ddim_grid(sched.num_steps, steps))
  a_all = torch.cat([sched.a[ts], torch.ones(1)])
  s_all = torch.cat([sched.s[ts], torch.zeros(1)])
  n = x.shape[0]
  for i in range(steps):
    eps = model(x, sched.net_time(ts[i]).expand(n))
    x0 = (x - s_all[i] * eps) / a_all[i]
    if clip is not None:
      x0 = x0.clamp(*clip)
      eps = (x - a_all[i] * x0) / s_all[i]
    x = a_all[i + 1] * x0 + s_all[i + 1] * eps
  return x
