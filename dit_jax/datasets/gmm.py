"""The paper's Gaussian mixture P = (1/K) sum_k N(mu_k, Sigma) as a TFDS dataset.

mu_k ~ N(0, scale^2 I) and a shared diagonal Sigma; samples are d-vectors rendered as
(H, W, C) float32 images (row-major flattening). The exact parameters go into the
DatasetInfo metadata so the ground-truth score can be computed later.
"""
import dataclasses
import hashlib

import numpy as np
import tensorflow_datasets as tfds

from dit_jax.datasets import local

from dit_jax.configlib import ConfigError

_CHUNK = 4096  # samples generated per step: bounds memory for large d


@dataclasses.dataclass(eq=False)
class GmmConfig(tfds.core.BuilderConfig):
  """Mixture parameters; build with gmm_config() so the name encodes all of them."""
  k: int = 8
  shape: tuple = (8, 8, 1)
  scale: float = 2.0
  cov_diag: tuple = dataclasses.field(default=(), repr=False)  # d variances of Sigma
  weights: tuple = ()  # K component weights
  size: int = 20000
  data_seed: int = 0


def _num(x):
  # repr is exact for floats; '.' and '-' are kept out of directory names.
  return repr(float(x)).replace(".", "p").replace("-", "m").replace("+", "")


def gmm_config(k=8, shape=(8, 8, 1), scale=2.0, cov_scale=1.0, cov_diag=None,
               size=20000, data_seed=0, weights=None):
  """A GmmConfig whose name differs whenever any parameter differs.

  cov_diag: the diagonal of Sigma (d variances); None means cov_scale^2 * I.
  weights: the K mixture weights, positive and summing to 1; None means uniform.
  """
  k, size, data_seed = int(k), int(size), int(data_seed)
  shape = tuple(int(s) for s in shape)
  d = int(np.prod(shape))
  if cov_diag is None:
    variances = np.full(d, float(cov_scale) ** 2)
  else:
    variances = np.asarray(cov_diag, np.float64)
    if variances.shape != (d,) or not np.all(variances > 0):
      raise ConfigError(f"config.data.gmm.cov_diag must be None or {d} positive variances "
                       f"(d = H*W*C of shape {shape}), got shape {variances.shape}.")
  if np.all(variances == variances[0]):
    cov_name = f"v{_num(variances[0])}"
  else:  # an arbitrary diagonal is too long for a name: hash it
    cov_name = "diag" + hashlib.sha1(variances.tobytes()).hexdigest()[:12]
  if weights is None:
    w, w_name = np.full(k, 1.0 / k), ""
  else:
    w = np.asarray(weights, np.float64)
    if w.shape != (k,) or not np.all(w > 0) or abs(w.sum() - 1) > 1e-6:
      raise ConfigError(f"config.data.gmm.weights must be {k} positive numbers summing to "
                        f"1 (one per component, k={k}), got {tuple(np.ravel(w))}.")
    w_name = "_w" + hashlib.sha1(w.tobytes()).hexdigest()[:12]
  name = (f"k{k}_{'x'.join(map(str, shape))}_s{_num(scale)}_{cov_name}"
          f"_n{size}_seed{data_seed}{w_name}")
  return GmmConfig(name=name, description=f"GMM {name}", k=k, shape=shape,
                   scale=float(scale), cov_diag=tuple(variances.tolist()),
                   weights=tuple(w.tolist()), size=size, data_seed=data_seed)


def mixture_params(config):
  """(means (K, d) float64, cov_diag (d,) float64); independent of size and of Sigma."""
  d = int(np.prod(config.shape))
  rng = np.random.default_rng([config.data_seed, 0])
  means = config.scale * rng.standard_normal((config.k, d))
  return means, np.asarray(config.cov_diag, np.float64)


def _uniform(config):
  return np.allclose(config.weights, 1.0 / config.k, rtol=0, atol=1e-15)


def sample(config):
  """Yields (index, component, x (H, W, C) float32) for all config.size samples."""
  means, cov_diag = mixture_params(config)
  std = np.sqrt(cov_diag)
  rng = np.random.default_rng([config.data_seed, 1])
  for start in range(0, config.size, _CHUNK):
    n = min(_CHUNK, config.size - start)
    if _uniform(config):  # the draws of the uniform mixture, as before weights existed
      comp = rng.integers(config.k, size=n)
    else:
      comp = rng.choice(config.k, size=n, p=np.asarray(config.weights))
    x = means[comp] + std * rng.standard_normal((n, means.shape[1]))
    x = x.astype(np.float32).reshape((n,) + tuple(config.shape))
    for i in range(n):
      yield start + i, int(comp[i]), x[i]


class Gmm(local.LocalBuilder):
  """Configs are made on the fly by gmm_config(); none is predefined."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = []

  def _info(self):
    config = self.builder_config
    if config is None:
      raise ValueError("Gmm needs a config: Gmm(config=gmm_config(...)).")
    means, cov_diag = mixture_params(config)
    metadata = tfds.core.MetadataDict(
        means=means.tolist(), cov_diag=cov_diag.tolist(),
        weights=list(config.weights), shape=list(config.shape),
        scale=config.scale, data_seed=config.data_seed)
    return tfds.core.DatasetInfo(
        builder=self,
        description="Samples of (1/K) sum_k N(mu_k, diag(cov_diag)), mu_k ~ N(0, scale^2 I).",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=config.shape, dtype=np.float32),
            "label": tfds.features.ClassLabel(num_classes=config.k),
            "index": tfds.features.Scalar(dtype=np.int64),
        }),
        metadata=metadata,
    )

  def _generate_examples(self):
    for i, comp, x in sample(self.builder_config):
      yield i, {"image": x, "label": comp, "index": i}
