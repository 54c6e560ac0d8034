"""Diffusion Transformer (Peebles & Xie 2023) in flax.nnx, with per-block widths.

Every block carries its own number of attention heads and MLP width so that
structured pruning can shrink blocks unevenly. Parameters are stored with the
head axis explicit (qkv kernel `D x 3 x H x Dh`, output kernel `H x Dh x D`),
which makes removing a head a slice along one axis.
"""
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dit_jax.configlib import ConfigError

# name -> (hidden size, depth, heads); the DiT paper's S/B/L/XL plus a CPU size.
VARIANTS = {
    "tiny": (128, 4, 4),
    "S": (384, 12, 6),
    "B": (768, 12, 12),
    "L": (1024, 24, 16),
    "XL": (1152, 28, 16),
}
PATCHES = (1, 2, 4, 8)
FREQ_DIM = 256  # width of the sinusoidal timestep features
# which half of the position embedding's channels encodes the patch row: dit_jax's
# row first, or facebookresearch/DiT's column first (its MAE-derived table meshes w first)
POS_ORDERS = ("row_col", "col_row")
FENCE_BLOCK = 16  # channels per identity product in the CPU cotangent fence


@dataclasses.dataclass(frozen=True)
class Arch:
  """Everything that fixes the parameter shapes. Saved with each checkpoint."""
  image_size: int
  channels: int
  patch: int
  hidden: int
  head_dim: int
  heads: tuple  # per block
  mlp: tuple  # per block hidden width of the MLP
  num_classes: int = 0  # 0: unconditional
  dtype: str = "float32"  # compute dtype; parameters stay float32

  @property
  def depth(self):
    return len(self.heads)

  @property
  def num_tokens(self):
    return (self.image_size // self.patch) ** 2

  def to_json(self):
    return {k: (list(v) if isinstance(v, tuple) else v)
            for k, v in dataclasses.asdict(self).items()}

  @classmethod
  def from_json(cls, d):
    d = dict(d)
    d["heads"], d["mlp"] = tuple(d["heads"]), tuple(d["mlp"])
    return cls(**d)


def parse_variant(variant):
  """'S/2' -> (hidden, depth, heads, patch), with a clear error otherwise."""
  name, _, patch = str(variant).partition("/")
  if name not in VARIANTS or not patch.isdigit() or int(patch) not in PATCHES:
    raise ConfigError(
        f"config.model.variant={variant!r} is not NAME/PATCH with NAME in "
        f"{sorted(VARIANTS)} and PATCH in {list(PATCHES)}; e.g. 'tiny/2' or 'S/4'.")
  return VARIANTS[name] + (int(patch),)


def _per_block(value, depth, field):
  """An int or a per-block list as a tuple of depth positive ints."""
  values = tuple(value) if isinstance(value, (tuple, list)) else (value,) * depth
  if len(values) != depth:
    raise ConfigError(f"config.model.{field} has {len(values)} entries but depth is "
                      f"{depth}; give one entry per block or a single int.")
  if any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in values):
    raise ConfigError(f"config.model.{field} entries must be positive integers, "
                      f"got {values!r}.")
  return values


def widths(model_cfg):
  """(hidden, depth, heads, mlp, head_dim) of config.model, per-block lists spelled out.

  The one place that resolves the variant's defaults: 0 / () fields take the
  variant's value; depth follows len(heads) when heads is a list.
  """
  hidden, depth, heads, _ = parse_variant(model_cfg.variant)
  for field in ("hidden", "depth", "head_dim"):
    value = model_cfg[field]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 2 ** 16:
      raise ConfigError(f"config.model.{field} must be an integer >= 0 (0: the "
                        f"variant's), got {value!r}.")
  hidden = model_cfg.hidden or hidden
  given = model_cfg.heads
  depth = model_cfg.depth or (len(given) if isinstance(given, (tuple, list)) and given
                              else depth)
  heads = _per_block(given or heads, depth, "heads")
  ratio = model_cfg.mlp_ratio
  if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not ratio > 0:
    raise ConfigError(f"config.model.mlp_ratio must be > 0, got {ratio!r}.")
  mlp = _per_block(model_cfg.mlp or int(hidden * ratio), depth, "mlp")
  head_dim = model_cfg.head_dim
  if not head_dim:
    if hidden % max(heads):
      raise ConfigError(f"config.model.hidden={hidden} is not divisible by "
                        f"config.model.heads={max(heads)}; pick a hidden size that "
                        "is a multiple of the head count, or set config.model.head_dim.")
    head_dim = hidden // max(heads)
  return hidden, depth, heads, mlp, head_dim


def arch_from_config(model_cfg, image_size, channels, num_classes):
  """Resolves config.model (variant plus optional overrides) into an Arch."""
  hidden, _, heads, mlp, head_dim = widths(model_cfg)
  _, _, _, patch = parse_variant(model_cfg.variant)
  if image_size % patch:
    raise ConfigError(f"config.data.image_size={image_size} is not divisible by the "
                      f"patch size {patch} of config.model.variant="
                      f"{model_cfg.variant!r}; use a smaller patch.")
  if model_cfg.dtype not in ("float32", "bfloat16", "float16"):
    raise ConfigError(f"config.model.dtype={model_cfg.dtype!r}: use float32 or bfloat16.")
  dropout = model_cfg.class_dropout
  if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout <= 1:
    raise ConfigError(f"config.model.class_dropout must be in [0, 1], got {dropout!r}.")
  if model_cfg.fence not in FENCE_SETTINGS:
    raise ConfigError(f"config.model.fence={model_cfg.fence!r}: use one of {FENCE_SETTINGS}.")
  check_embedding(model_cfg)
  return Arch(image_size=image_size, channels=channels, patch=patch,
              hidden=hidden, head_dim=head_dim, heads=heads,
              mlp=mlp, num_classes=num_classes, dtype=model_cfg.dtype)


def check_embedding(model_cfg):
  """config.model.time_scale and pos_order: ConfigError naming the field and the fix."""
  scale = model_cfg.time_scale
  if (isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0
      or not math.isfinite(scale)):
    raise ConfigError(f"config.model.time_scale must be > 0 (1000: dit_jax's; 999: "
                      f"facebookresearch/DiT's step index), got {scale!r}.")
  if model_cfg.pos_order not in POS_ORDERS:
    raise ConfigError(f"config.model.pos_order={model_cfg.pos_order!r}: use one of "
                      f"{POS_ORDERS}.")


def patchify(img_BHWC, p):
  b, h, w, c = img_BHWC.shape
  x = img_BHWC.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(x_BTP, p, c):
  b, t, _ = x_BTP.shape
  g = math.isqrt(t)
  x = x_BTP.reshape(b, g, g, p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, g * p, g * p, c)


def sincos_2d(dim, grid, order="row_col"):
  """Fixed 2-D sin-cos position embedding, (grid*grid, dim); numpy, not a param.

  Tokens are row-major; `order` (POS_ORDERS) says whether the first half of the
  channels encodes the row or the column.
  """
  def one_axis(d, pos):
    omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
    out = np.outer(pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)
  gh, gw = np.meshgrid(np.arange(grid, dtype=np.float64),
                       np.arange(grid, dtype=np.float64), indexing="ij")
  first, second = (gh, gw) if order == "row_col" else (gw, gh)
  emb = np.concatenate([one_axis(dim // 2, first), one_axis(dim // 2, second)], axis=1)
  return emb.astype(np.float32)


def timestep_features(t_B, dim=FREQ_DIM, max_period=10000.0, scale=1000.0):
  """Sinusoidal features of the network time (in [0, 1], times `scale`).

  scale = num_steps - 1 feeds the integer step index itself, as facebookresearch/DiT
  does: float32 t / 999 * 999 gives back every integer step exactly.
  """
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = (scale * t_B.astype(jnp.float32))[:, None] * freqs[None]
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


def _param(rngs, init, shape):
  return nnx.Param(init(rngs.params(), shape, jnp.float32))


_xavier = jax.nn.initializers.xavier_uniform
_zeros = jax.nn.initializers.zeros
_normal = jax.nn.initializers.normal


def _layer_norm(x, eps=1e-6):
  """LayerNorm without affine parameters: adaLN supplies scale and shift."""
  x32 = x.astype(jnp.float32)
  mean = x32.mean(-1, keepdims=True)
  var = jnp.square(x32 - mean).mean(-1, keepdims=True)
  return ((x32 - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype)


def _modulate(x, shift, scale):
  return x * (1 + scale[:, None]) + shift[:, None]


@jax.custom_vjp
def _cotangent_fence(x):
  """Identity whose backward passes the cotangent through an identity product.

  XLA:CPU fuses the residual stream's backward (the layer-norm and gate terms of
  every later block, all cheap elementwise ops) into each consumer that needs it
  in another layout, recomputing the whole chain per consumer: the backward grows
  with the square of the depth and, at batch 32-128, costs several times the
  forward. A dot is never duplicated into a fusion, so an identity product where
  each layer norm reads the stream makes XLA compute the chain once, and the step
  1.6-2x faster on the CPU at batch 32-128 (bench/throughput/cotangent_fence.py); other
  backends do not need it (config.model.fence, `resolve_fence`).

  The product runs on blocks of FENCE_BLOCK channels, (..., D/16, 16) @ I_16, not
  on all D at once: any dot fences, and the block one costs 32 flops per element
  instead of 2*D (768 for S/2, whose train step it makes 4% cheaper in CPU time, 2%
  for tiny/2; BENCHMARKS.md). Exact: each output is one input times 1 plus zeros.
  """
  return x


def _fence_fwd(x):
  return x, None


def _fence_bwd(_, g):
  k = math.gcd(g.shape[-1], FENCE_BLOCK)
  blocks = g.reshape(*g.shape[:-1], g.shape[-1] // k, k)
  return ((blocks @ jnp.eye(k, dtype=g.dtype)).reshape(g.shape),)


_cotangent_fence.defvjp(_fence_fwd, _fence_bwd)


FENCE_SETTINGS = ("auto", "on", "off")


def resolve_fence(setting):
  """config.model.fence -> whether the model fences its residual cotangents.

  "auto" fences on XLA:CPU only, the backend where it pays (on and off force it).
  """
  if setting not in FENCE_SETTINGS:
    raise ConfigError(f"config.model.fence={setting!r}: use one of {FENCE_SETTINGS}.")
  return setting == "on" or (setting == "auto" and jax.default_backend() == "cpu")


def _fence_if(fence, x_BTD):
  """Fences the residual stream where a layer norm reads it."""
  return _cotangent_fence(x_BTD) if fence else x_BTD


def _per_example(mask):
  """A unit mask as (B or 1, units): one mask for the batch, or one per example."""
  return mask if mask.ndim == 2 else mask[None]


class Block(nnx.Module):
  """adaLN-Zero transformer block; `heads` and `mlp` are this block's own widths."""

  def __init__(self, hidden, head_dim, heads, mlp, dtype, fence=False, *, rngs):
    d = hidden
    self.dtype = jnp.dtype(dtype)
    self.fence = fence
    self.ada_w = _param(rngs, _zeros, (d, 6 * d))
    self.ada_b = _param(rngs, _zeros, (6 * d,))
    # xavier over the fused (D, 3*H*Dh) matrix, as a single Linear would be.
    qkv = _xavier()(rngs.params(), (d, 3 * heads * head_dim), jnp.float32)
    self.qkv_w = nnx.Param(qkv.reshape(d, 3, heads, head_dim))
    self.qkv_b = _param(rngs, _zeros, (3, heads, head_dim))
    out = _xavier()(rngs.params(), (heads * head_dim, d), jnp.float32)
    self.out_w = nnx.Param(out.reshape(heads, head_dim, d))
    self.out_b = _param(rngs, _zeros, (d,))
    self.fc1_w = _param(rngs, _xavier(), (d, mlp))
    self.fc1_b = _param(rngs, _zeros, (mlp,))
    self.fc2_w = _param(rngs, _xavier(), (mlp, d))
    self.fc2_b = _param(rngs, _zeros, (d,))

  def __call__(self, x_BTD, c_BD, head_mask=None, mlp_mask=None):
    dt = self.dtype
    mod = jax.nn.silu(c_BD) @ self.ada_w[...].astype(dt) + self.ada_b[...].astype(dt)
    sh1, sc1, g1, sh2, sc2, g2 = jnp.split(mod, 6, axis=-1)

    x_BTD = _fence_if(self.fence, x_BTD)
    h = _modulate(_layer_norm(x_BTD), sh1, sc1)
    qkv_BT3HK = (jnp.einsum("btd,dshk->btshk", h, self.qkv_w[...].astype(dt))
                 + self.qkv_b[...].astype(dt))
    o_BTHK = jax.nn.dot_product_attention(*(qkv_BT3HK[:, :, i] for i in range(3)))
    if head_mask is not None:  # importance probes: d loss / d mask, (H,) or per example (B, H)
      o_BTHK = o_BTHK * _per_example(head_mask.astype(dt))[:, None, :, None]
    attn = jnp.einsum("bthk,hkd->btd", o_BTHK, self.out_w[...].astype(dt))
    x_BTD = x_BTD + g1[:, None] * (attn + self.out_b[...].astype(dt))

    x_BTD = _fence_if(self.fence, x_BTD)
    h = _modulate(_layer_norm(x_BTD), sh2, sc2)
    u_BTM = jax.nn.gelu(h @ self.fc1_w[...].astype(dt) + self.fc1_b[...].astype(dt),
                        approximate=True)
    if mlp_mask is not None:
      u_BTM = u_BTM * _per_example(mlp_mask.astype(dt))[:, None, :]
    m = u_BTM @ self.fc2_w[...].astype(dt) + self.fc2_b[...].astype(dt)
    return x_BTD + g2[:, None] * m


def _call_block(block, x_BTD, c_BD, head_mask, mlp_mask):
  return block(x_BTD, c_BD, head_mask, mlp_mask)


class DiT(nnx.Module):
  """Predicts the noise eps from (x_t, network time in [0,1], label)."""

  def __init__(self, arch: Arch, fence=False, remat=False, time_scale=1000.0,
               pos_order="row_col", *, rngs: nnx.Rngs):
    self.arch = arch
    self.fence = fence
    # input conventions: they change the function, not the parameters (check_embedding)
    self.time_scale, self.pos_order = float(time_scale), pos_order
    self.remat = remat  # recompute each block in the backward pass: less memory
    d, p, c = arch.hidden, arch.patch, arch.channels
    self.patch_w = _param(rngs, _xavier(), (p * p * c, d))
    self.patch_b = _param(rngs, _zeros, (d,))
    self.t_w1 = _param(rngs, _normal(0.02), (FREQ_DIM, d))
    self.t_b1 = _param(rngs, _zeros, (d,))
    self.t_w2 = _param(rngs, _normal(0.02), (d, d))
    self.t_b2 = _param(rngs, _zeros, (d,))
    if arch.num_classes:
      # the extra last row is the null label used for classifier-free guidance
      self.label_embed = _param(rngs, _normal(0.02), (arch.num_classes + 1, d))
    self.blocks = nnx.List([
        Block(d, arch.head_dim, h, m, arch.dtype, fence, rngs=rngs)
        for h, m in zip(arch.heads, arch.mlp)])
    self.final_ada_w = _param(rngs, _zeros, (d, 2 * d))
    self.final_ada_b = _param(rngs, _zeros, (2 * d,))
    self.final_w = _param(rngs, _zeros, (d, p * p * c))
    self.final_b = _param(rngs, _zeros, (p * p * c,))

  def __call__(self, x_BHWC, t_B, y_B=None, head_masks=None, mlp_masks=None):
    arch, dt = self.arch, jnp.dtype(self.arch.dtype)
    x = patchify(x_BHWC.astype(dt), arch.patch)
    x = x @ self.patch_w[...].astype(dt) + self.patch_b[...].astype(dt)
    grid = arch.image_size // arch.patch
    x_BTD = x + jnp.asarray(sincos_2d(arch.hidden, grid, self.pos_order), dt)[None]

    temb = timestep_features(t_B, scale=self.time_scale).astype(dt)
    temb = jax.nn.silu(temb @ self.t_w1[...].astype(dt) + self.t_b1[...].astype(dt))
    c_BD = temb @ self.t_w2[...].astype(dt) + self.t_b2[...].astype(dt)
    if arch.num_classes:
      if y_B is None:  # unconditional call: everything gets the null label
        y_B = jnp.full(t_B.shape, arch.num_classes, jnp.int32)
      c_BD = c_BD + self.label_embed[...].astype(dt)[y_B]

    call = _call_block
    if self.remat:
      call = nnx.remat(_call_block)
    for i, block in enumerate(self.blocks):
      x_BTD = call(block, x_BTD, c_BD,
                   None if head_masks is None else head_masks[i],
                   None if mlp_masks is None else mlp_masks[i])

    x_BTD = _fence_if(self.fence, x_BTD)
    mod = jax.nn.silu(c_BD) @ self.final_ada_w[...].astype(dt) + self.final_ada_b[...].astype(dt)
    shift, scale = jnp.split(mod, 2, axis=-1)
    x = _modulate(_layer_norm(x_BTD), shift, scale)
    x = x @ self.final_w[...].astype(dt) + self.final_b[...].astype(dt)
    return unpatchify(x, arch.patch, arch.channels).astype(jnp.float32)


def abstract_model(arch, fence=False, remat=False, time_scale=1000.0, pos_order="row_col"):
  """(graphdef, abstract params) without allocating anything.

  `fence` (resolve_fence), `remat` and the input conventions (check_embedding) are
  part of the graph, not of the parameters.
  """
  graphdef, params = nnx.split(
      nnx.eval_shape(lambda: DiT(arch, fence, remat, time_scale, pos_order,
                                 rngs=nnx.Rngs(0))), nnx.Param)
  return graphdef, nnx.to_pure_dict(params)


def init_params(arch, key):
  """Parameters as a plain nested dict (what optax, EMA and orbax see)."""
  model = DiT(arch, rngs=nnx.Rngs(params=key))
  return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def apply(graphdef, params, x, t, y=None, **masks):
  return nnx.merge(graphdef, params)(x, t, y, **masks)


def num_params(arch):
  _, params = abstract_model(arch)
  return int(sum(np.prod(p.shape) for p in jax.tree.leaves(params)))


def flops_per_image(arch):
  """Analytic forward FLOPs (2 per multiply-add) of one image; matmuls only."""
  d, t, pc = arch.hidden, arch.num_tokens, arch.patch ** 2 * arch.channels
  total = 2 * t * pc * d  # patch embedding
  total += 2 * (FREQ_DIM * d + d * d)  # timestep MLP
  for h, m in zip(arch.heads, arch.mlp):
    inner = h * arch.head_dim
    total += 2 * d * 6 * d  # adaLN modulation
    total += 2 * t * d * 3 * inner  # q, k, v
    total += 2 * 2 * t * t * inner  # scores and weighted sum
    total += 2 * t * inner * d  # attention output
    total += 2 * 2 * t * d * m  # MLP
  total += 2 * d * 2 * d + 2 * t * d * pc  # final layer
  return int(total)
