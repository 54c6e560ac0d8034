"""The Stable Diffusion kl-f8 VAE (diffusers' AutoencoderKL) in flax.nnx.

The autoencoder latent DiTs train in: 8x down-sampling to 4 channels, scaled by
0.18215 so the latents have about unit variance (what DiT's sd-vae-ft-ema /
sd-vae-ft-mse weights were trained with). Modules and parameters carry diffusers'
own names ("encoder.down_blocks.0.resnets.1.conv1.weight"), so loading a
diffusers-format .safetensors file is a rename-free walk; kernels are stored in
JAX's layouts (HWIO convolutions, (in, out) dense) and transposed on load.

Images are NHWC in [-1, 1]; latents NHWC, already multiplied by the scale.
"""
import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dit_jax import safetensors
from dit_jax.configlib import ConfigError

SCALE = 0.18215  # sd-vae-ft-ema / -mse latents times this have about unit variance
_EPS = 1e-6  # every GroupNorm of the kl-f8 VAE
# the spelling older diffusers releases saved the mid-block attention under
_OLD_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


@dataclasses.dataclass(frozen=True)
class VAEConfig:
  """Shapes of an AutoencoderKL; the defaults are kl-f8's (sd-vae-ft-ema)."""
  block_out_channels: tuple = (128, 256, 512, 512)
  layers_per_block: int = 2
  in_channels: int = 3
  latent_channels: int = 4
  norm_num_groups: int = 32
  scaling_factor: float = SCALE

  @property
  def downsample(self):
    return 2 ** (len(self.block_out_channels) - 1)


def _zeros(*shape):
  return nnx.Param(jnp.zeros(shape, jnp.float32))


class Conv(nnx.Module):
  def __init__(self, cin, cout, k=3, stride=1):
    self.weight, self.bias = _zeros(k, k, cin, cout), _zeros(cout)
    self.stride = stride

  def __call__(self, x):
    # stride 2 is diffusers' Downsample2D: pad right and bottom by one, no other padding
    pad = ((0, 1), (0, 1)) if self.stride == 2 else "SAME"
    y = jax.lax.conv_general_dilated(x, self.weight[...], (self.stride,) * 2, pad,
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                     precision=jax.lax.Precision.HIGHEST)
    return y + self.bias[...]


class Dense(nnx.Module):
  def __init__(self, cin, cout):
    self.weight, self.bias = _zeros(cin, cout), _zeros(cout)

  def __call__(self, x):
    return jnp.matmul(x, self.weight[...], precision=jax.lax.Precision.HIGHEST) + self.bias[...]


class GroupNorm(nnx.Module):
  def __init__(self, channels, groups):
    self.weight, self.bias = nnx.Param(jnp.ones((channels,))), _zeros(channels)
    self.groups = groups

  def __call__(self, x_NHWC):
    n, h, w, c = x_NHWC.shape
    g = x_NHWC.reshape(n, h, w, self.groups, c // self.groups)
    mean = g.mean(axis=(1, 2, 4), keepdims=True)
    var = jnp.square(g - mean).mean(axis=(1, 2, 4), keepdims=True)
    g = (g - mean) * jax.lax.rsqrt(var + _EPS)
    return g.reshape(n, h, w, c) * self.weight[...] + self.bias[...]


class Resnet(nnx.Module):
  def __init__(self, cin, cout, groups):
    self.norm1, self.conv1 = GroupNorm(cin, groups), Conv(cin, cout)
    self.norm2, self.conv2 = GroupNorm(cout, groups), Conv(cout, cout)
    if cin != cout:
      self.conv_shortcut = Conv(cin, cout, k=1)

  def __call__(self, x):
    h = self.conv1(jax.nn.silu(self.norm1(x)))
    h = self.conv2(jax.nn.silu(self.norm2(h)))
    return (self.conv_shortcut(x) if hasattr(self, "conv_shortcut") else x) + h


class Attention(nnx.Module):
  """One-head self-attention over all positions, with a residual (the mid block's)."""

  def __init__(self, c, groups):
    self.group_norm = GroupNorm(c, groups)
    self.to_q, self.to_k, self.to_v = Dense(c, c), Dense(c, c), Dense(c, c)
    self.to_out = nnx.List([Dense(c, c)])

  def __call__(self, x):
    n, h, w, c = x.shape
    t = self.group_norm(x).reshape(n, h * w, 1, c)
    o = jax.nn.dot_product_attention(self.to_q(t), self.to_k(t), self.to_v(t))
    return x + self.to_out[0](o.reshape(n, h * w, c)).reshape(n, h, w, c)


class Mid(nnx.Module):
  def __init__(self, c, groups):
    self.resnets = nnx.List([Resnet(c, c, groups), Resnet(c, c, groups)])
    self.attentions = nnx.List([Attention(c, groups)])

  def __call__(self, x):
    return self.resnets[1](self.attentions[0](self.resnets[0](x)))


class Resampler(nnx.Module):
  """Holds the conv of diffusers' Downsample2D / Upsample2D (key `...samplers.0.conv`)."""

  def __init__(self, conv):
    self.conv = conv


class Stage(nnx.Module):
  """A DownEncoderBlock2D or UpDecoderBlock2D: resnets, then an optional resampler."""

  def __init__(self, cin, cout, layers, groups, resample=None):
    self.resnets = nnx.List([Resnet(cin if i == 0 else cout, cout, groups)
                             for i in range(layers)])
    self.resample = resample
    if resample == "down":
      self.downsamplers = nnx.List([Resampler(Conv(cout, cout, stride=2))])
    elif resample == "up":
      self.upsamplers = nnx.List([Resampler(Conv(cout, cout))])

  def __call__(self, x):
    for r in self.resnets:
      x = r(x)
    if self.resample == "down":
      x = self.downsamplers[0].conv(x)
    elif self.resample == "up":
      x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)  # nearest-neighbour 2x
      x = self.upsamplers[0].conv(x)
    return x


class Encoder(nnx.Module):
  def __init__(self, cfg: VAEConfig):
    ch, g, last = cfg.block_out_channels, cfg.norm_num_groups, len(cfg.block_out_channels) - 1
    self.conv_in = Conv(cfg.in_channels, ch[0])
    self.down_blocks = nnx.List([
        Stage(ch[max(i - 1, 0)], ch[i], cfg.layers_per_block, g, None if i == last else "down")
        for i in range(len(ch))])
    self.mid_block = Mid(ch[-1], g)
    self.conv_norm_out = GroupNorm(ch[-1], g)
    self.conv_out = Conv(ch[-1], 2 * cfg.latent_channels)

  def __call__(self, x):
    x = self.conv_in(x)
    for b in self.down_blocks:
      x = b(x)
    return self.conv_out(jax.nn.silu(self.conv_norm_out(self.mid_block(x))))


class Decoder(nnx.Module):
  def __init__(self, cfg: VAEConfig):
    ch, g = tuple(reversed(cfg.block_out_channels)), cfg.norm_num_groups
    self.conv_in = Conv(cfg.latent_channels, ch[0])
    self.mid_block = Mid(ch[0], g)
    self.up_blocks = nnx.List([
        Stage(ch[max(i - 1, 0)], ch[i], cfg.layers_per_block + 1, g,
              None if i == len(ch) - 1 else "up")
        for i in range(len(ch))])
    self.conv_norm_out = GroupNorm(ch[-1], g)
    self.conv_out = Conv(ch[-1], cfg.in_channels)

  def __call__(self, z):
    x = self.mid_block(self.conv_in(z))
    for b in self.up_blocks:
      x = b(x)
    return self.conv_out(jax.nn.silu(self.conv_norm_out(x)))


class AutoencoderKL(nnx.Module):
  """encode: images -> scaled latent mean; decode: scaled latents -> images."""

  def __init__(self, cfg: VAEConfig = VAEConfig()):
    self.cfg = cfg
    self.encoder, self.decoder = Encoder(cfg), Decoder(cfg)
    two = 2 * cfg.latent_channels
    self.quant_conv = Conv(two, two, k=1)
    self.post_quant_conv = Conv(cfg.latent_channels, cfg.latent_channels, k=1)

  def moments(self, x_NHWC):
    """(mean, logvar) of the latent Gaussian, unscaled."""
    return jnp.split(self.quant_conv(self.encoder(x_NHWC)), 2, axis=-1)

  def encode(self, x_NHWC):
    return self.moments(x_NHWC)[0] * self.cfg.scaling_factor

  def decode(self, z_NHWC):
    return self.decoder(self.post_quant_conv(z_NHWC / self.cfg.scaling_factor))


def infer_config(tensors, groups=32, scaling_factor=SCALE):
  """VAEConfig from diffusers' tensor shapes; the norm groups are in no shape."""
  try:
    n = len({k.split(".")[2] for k in tensors if k.startswith("encoder.down_blocks.")})
    ch = tuple(int(tensors[f"encoder.down_blocks.{i}.resnets.0.conv1.weight"].shape[0])
               for i in range(n))
    layers = len({k.split(".")[4] for k in tensors
                  if k.startswith("encoder.down_blocks.0.resnets.")})
    return VAEConfig(block_out_channels=ch, layers_per_block=layers,
                     in_channels=int(tensors["encoder.conv_in.weight"].shape[1]),
                     latent_channels=int(tensors["post_quant_conv.weight"].shape[0]),
                     norm_num_groups=groups, scaling_factor=scaling_factor)
  except KeyError as e:
    raise ConfigError(f"not a diffusers AutoencoderKL state: no tensor {e}") from e


def load(path, groups=None, scaling_factor=None):
  """An AutoencoderKL with the weights of a diffusers .safetensors file.

  groups / scaling_factor: from the config.json beside the file when there is one
  (diffusers saves it there), else kl-f8's 32 and 0.18215.
  """
  tensors = {_rename(k): v for k, v in safetensors.load(path).items()}
  cfg_file = os.path.join(os.path.dirname(os.path.abspath(path)), "config.json")
  stored = {}
  if os.path.exists(cfg_file):
    with open(cfg_file, encoding="utf-8") as f:
      stored = json.load(f)
  cfg = infer_config(tensors, groups or stored.get("norm_num_groups", 32),
                     scaling_factor or stored.get("scaling_factor", SCALE))
  graphdef, state = nnx.split(nnx.eval_shape(lambda: AutoencoderKL(cfg)))
  missing = []

  def fill(p, leaf):  # the state path spelled with dots is diffusers' key
    name = ".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in p)
    if name not in tensors:
      missing.append(name)
      return leaf
    return jnp.asarray(_to_jax_layout(tensors.pop(name), leaf.shape, name))

  pure = jax.tree_util.tree_map_with_path(fill, nnx.to_pure_dict(state))
  if missing or tensors:
    raise ConfigError(f"{path}: the file's tensors do not match an AutoencoderKL of "
                      f"{cfg}: missing {missing[:4]}, unexpected {sorted(tensors)[:4]}.")
  nnx.replace_by_pure_dict(state, pure)
  return nnx.merge(graphdef, state)


def _rename(key):
  parts = key.split(".")
  if len(parts) >= 2 and parts[-2] in _OLD_ATTENTION:
    return ".".join(parts[:-2] + [_OLD_ATTENTION[parts[-2]], parts[-1]])
  return key


def _to_jax_layout(array, shape, name):
  a = np.asarray(array, np.float32)
  if a.ndim == 4:  # torch conv OIHW -> HWIO
    a = a.transpose(2, 3, 1, 0)
  elif a.ndim == 2:  # torch dense (out, in) -> (in, out)
    a = a.T
  if tuple(a.shape) != tuple(shape):
    raise ConfigError(f"{name}: shape {array.shape} does not fit {tuple(shape)}.")
  return a
