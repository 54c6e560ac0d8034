"""Sample metrics: nearest-neighbour memorization, precision/recall, Frechet distance, NLL.

Distances are exact sums of squared differences (never the |x|^2 + |r|^2 - 2x.r
expansion, whose float32 cancellation swamps the tiny distances of memorized
samples), computed in float32 blocks under a jitted scan so memory stays bounded.
"""
import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy import spatial
from flax import nnx

BLOCK_BYTES = 64 * 2 ** 20


def _flat(x):
  x = np.asarray(x, np.float32)
  return x.reshape(len(x), -1)


def default_chunk(dim, block_bytes=BLOCK_BYTES):
  """Rows per chunk (of both sides) so a (chunk, chunk, dim) float32 block is ~block_bytes."""
  return int(np.clip(np.sqrt(block_bytes / 4 / max(1, dim)), 8, 4096))


def _ref_blocks(ref_MD, chunk):
  """ref padded to whole chunks: (B, chunk, D) rows and their (B, chunk) global indices."""
  m, d = ref_MD.shape
  pad = -m % chunk
  ref = np.concatenate([ref_MD, np.zeros((pad, d), np.float32)])
  return jnp.asarray(ref.reshape(-1, chunk, d)), jnp.arange(m + pad).reshape(-1, chunk)


def _sqdist(x_CD, r_MD):
  return jnp.sum(jnp.square(x_CD[:, None, :] - r_MD[None, :, :]), -1)


@functools.partial(jax.jit, static_argnames=("k", "m"))
def _topk_chunk(x_CD, xidx_C, refs_BMD, ridx_BM, k, m):
  """Running k smallest distances (and indices) over ref blocks; skips ref == x index."""
  def body(carry, block):
    best_Ck, idx_Ck = carry
    r_MD, ridx_M = block
    bad = (ridx_M[None] >= m) | (ridx_M[None] == xidx_C[:, None])
    d_CM = jnp.where(bad, jnp.inf, _sqdist(x_CD, r_MD))
    all_d = jnp.concatenate([best_Ck, d_CM], 1)
    all_i = jnp.concatenate([idx_Ck, jnp.broadcast_to(ridx_M, d_CM.shape)], 1)
    neg, pos = jax.lax.top_k(-all_d, k)
    return (-neg, jnp.take_along_axis(all_i, pos, 1)), None

  c = x_CD.shape[0]
  init = (jnp.full((c, k), jnp.inf, jnp.float32), jnp.full((c, k), -1, ridx_BM.dtype))
  return jax.lax.scan(body, init, (refs_BMD, ridx_BM))[0]


def _x_chunks(x_ND, chunk):
  """Fixed-size (padded) chunks of x with their global indices, so one compile serves all."""
  n = len(x_ND)
  c = min(chunk, n)
  for s in range(0, n, c):
    part = x_ND[s:s + c]
    pad = c - len(part)
    yield s, len(part), np.pad(part, ((0, pad), (0, 0))), np.arange(s, s + c)


def _topk(x_ND, ref_MD, k, chunk=None, exclude_self=False):
  """(N, k) smallest squared distances from x to ref and their ref indices."""
  chunk = chunk or default_chunk(x_ND.shape[1])
  m = len(ref_MD)
  refs, ridx = _ref_blocks(ref_MD, min(chunk, m))
  dist, idx = np.empty((len(x_ND), k), np.float32), np.empty((len(x_ND), k), np.int64)
  for s, n, part, xidx in _x_chunks(x_ND, chunk):
    xidx = xidx if exclude_self else np.full_like(xidx, -1)
    d, i = _topk_chunk(jnp.asarray(part), jnp.asarray(xidx), refs, ridx, k, m)
    dist[s:s + n], idx[s:s + n] = np.asarray(d)[:n], np.asarray(i)[:n]
  return dist, idx


def nearest_two(x_ND, ref_MD, chunk=None):
  """Squared distances to the nearest and second-nearest ref rows, and the nearest's index."""
  x, ref = _flat(x_ND), _flat(ref_MD)
  if len(ref) < 2:
    raise ValueError(f"nearest_two needs at least 2 reference rows, got {len(ref)}")
  if x.shape[1] != ref.shape[1]:
    raise ValueError(f"dimension mismatch: x has {x.shape[1]}, ref has {ref.shape[1]}")
  dist, idx = _topk(x, ref, 2, chunk)
  return dist[:, 0], dist[:, 1], idx[:, 0]


def nearest_two_streamed(x_ND, ref_parts, chunk=None):
  """nearest_two against a reference given in parts [(first row, rows), ...] (a
  training split read from disk), merging each part's two nearest."""
  x = _flat(x_ND)
  dist = np.full((len(x), 2), np.inf, np.float32)
  idx = np.zeros((len(x), 2), np.int64)
  for start, part in ref_parts:
    part = _flat(part)
    d, i = _topk(x, part, min(2, len(part)), chunk)
    both_d, both_i = np.concatenate([dist, d], 1), np.concatenate([idx, i + start], 1)
    order = np.argsort(both_d, axis=1, kind="stable")[:, :2]
    dist, idx = np.take_along_axis(both_d, order, 1), np.take_along_axis(both_i, order, 1)
  return dist[:, 0], dist[:, 1], idx[:, 0]


def memorization_ratio(d1sq, d2sq, threshold=1 / 3):
  """Fraction of samples with |x - NN1| <= threshold |x - NN2| (Yoon et al.; Gu et al. 2023)."""
  d1sq, d2sq = np.asarray(d1sq, np.float64), np.asarray(d2sq, np.float64)
  return float(np.mean(d1sq <= threshold ** 2 * d2sq))


def d_ratio(d1sq, d2sq):
  """|x - NN1| / |x - NN2| per sample, from the squared distances nearest_two gives."""
  d1sq, d2sq = np.asarray(d1sq, np.float64), np.asarray(d2sq, np.float64)
  return np.sqrt(d1sq / np.maximum(d2sq, 1e-300))  # d2 = 0 forces d1 = 0: ratio 0


def d_ratio_histogram(d1sq, d2sq, bins=50):
  """(counts, edges) of |x - NN1| / |x - NN2| over [0, 1]."""
  return np.histogram(d_ratio(d1sq, d2sq), bins=bins, range=(0.0, 1.0))


@jax.jit
def _covered_chunk(x_CD, refs_BMD, radii_BM):
  """Whether each x lies in some ball |x - r| <= radius_r (padding has radius -inf)."""
  def body(inside_C, block):
    r_MD, rad_M = block
    hit = jnp.any(_sqdist(x_CD, r_MD) <= rad_M[None], 1)
    return inside_C | hit, None
  init = jnp.zeros(x_CD.shape[0], bool)
  return jax.lax.scan(body, init, (refs_BMD, radii_BM))[0]


def _coverage(x_ND, ref_MD, k, chunk):
  """Fraction of x inside the k-NN manifold of ref (balls to each ref's k-th other ref)."""
  radii = _topk(ref_MD, ref_MD, k, chunk, exclude_self=True)[0][:, k - 1]
  c = min(chunk, len(ref_MD))
  refs, _ = _ref_blocks(ref_MD, c)
  pad = refs.shape[0] * c - len(ref_MD)
  rad = jnp.asarray(np.concatenate([radii, np.full(pad, -np.inf, np.float32)]).reshape(-1, c))
  inside = [np.asarray(_covered_chunk(jnp.asarray(part), refs, rad))[:n]
            for _, n, part, _ in _x_chunks(x_ND, chunk)]
  return float(np.mean(np.concatenate(inside)))


def precision_recall(real_NF, fake_MF, k=3, chunk=None):
  """Improved precision and recall (Kynkaanniemi et al. 2019) with k-NN radii."""
  real, fake = _flat(real_NF), _flat(fake_MF)
  if min(len(real), len(fake)) <= k:
    raise ValueError(f"need more than k={k} real and fake rows, got {len(real)}, {len(fake)}")
  chunk = chunk or default_chunk(real.shape[1])
  return _coverage(fake, real, k, chunk), _coverage(real, fake, k, chunk)


def _psd_sqrt(c_FF):
  w, v = np.linalg.eigh(c_FF)
  return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def gaussian_fit(x_NF):
  """(mean, covariance) of the rows of x, in float64: the statistics FD compares."""
  x = np.asarray(x_NF, np.float64).reshape(len(x_NF), -1)
  return x.mean(0), np.atleast_2d(np.cov(x, rowvar=False))


def frechet_from_fits(mu_a, ca, mu_b, cb):
  """|mu_a - mu_b|^2 + tr(Ca + Cb - 2 (Ca Cb)^1/2), in float64.

  tr (Ca Cb)^1/2 = tr (Ca^1/2 Cb Ca^1/2)^1/2, a symmetric PSD matrix, so eigh
  gives it without sqrtm's complex parts or its singular-product failures.
  """
  sa = _psd_sqrt(ca)
  mid = sa @ cb @ sa
  tr_sqrt = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((mid + mid.T) / 2), 0, None)))
  diff = mu_a - mu_b
  return float(diff @ diff + np.trace(ca) + np.trace(cb) - 2 * tr_sqrt)


def frechet_distance(a_NF, b_MF):
  """The Frechet distance of Gaussian fits to two sets of rows."""
  return frechet_from_fits(*gaussian_fit(a_NF), *gaussian_fit(b_MF))


def energy_distance(a_ND, b_MD):
  """Squared energy distance 2 E|A - B| - E|A - A'| - E|B - B'| (Szekely & Rizzo).

  Zero exactly when the two distributions are equal, with Euclidean distances
  (no kernel or bandwidth to choose); within-set means leave out the zero
  self-distances (U-statistics), so two draws of one distribution score ~0.
  Pairwise in float64: meant for the few thousand rows of an evaluation.
  """
  a = np.asarray(_flat(a_ND), np.float64)
  b = np.asarray(_flat(b_MD), np.float64)
  within = lambda x: spatial.distance.pdist(x).mean()  # pairs i < j: no self-distances
  return float(2 * spatial.distance.cdist(a, b).mean() - within(a) - within(b))


@jax.jit
def _gmm_logp_chunk(x_CD, means_KD, cov_D, logw_K):
  diff_CKD = x_CD[:, None, :] - means_KD[None]
  quad_CK = jnp.sum(jnp.square(diff_CKD) / cov_D, -1)
  norm = jnp.sum(jnp.log(2 * jnp.pi * cov_D))
  return jax.nn.logsumexp(logw_K[None] - 0.5 * (quad_CK + norm), axis=-1)


def log_likelihood_gmm(x_ND, means_KD, cov_diag_D, weights_K=None):
  """Exact log p(x) under sum_k w_k N(mu_k, diag(cov)); uniform weights by default."""
  x = _flat(x_ND)
  means = np.asarray(means_KD, np.float32)
  k, d = means.shape
  w = np.full(k, 1 / k) if weights_K is None else np.asarray(weights_K, np.float64)
  logw = jnp.asarray(np.log(w / w.sum()), jnp.float32)
  cov = jnp.asarray(np.broadcast_to(np.asarray(cov_diag_D, np.float32), (d,)))
  chunk = max(1, BLOCK_BYTES // (4 * k * d))
  out = [np.asarray(_gmm_logp_chunk(jnp.asarray(part), means, cov, logw))[:n]
         for _, n, part, _ in _x_chunks(x, chunk)]
  return np.concatenate(out)


def gmm_nll_per_dim(x_ND, means_KD, cov_diag_D, weights_K=None):
  """Negative log-likelihood per dimension (nats), averaged over x."""
  logp = log_likelihood_gmm(x_ND, means_KD, cov_diag_D, weights_K)
  return float(-np.mean(logp) / _flat(x_ND[:1]).shape[1])


class _MLP(nnx.Module):
  """flatten -> 256 -> 128 (features) -> classes, GELU."""

  def __init__(self, din, num_classes, rngs):
    self.l1 = nnx.Linear(din, 256, rngs=rngs)
    self.l2 = nnx.Linear(256, 128, rngs=rngs)
    self.head = nnx.Linear(128, num_classes, rngs=rngs)

  def features(self, x_NF):
    return jax.nn.gelu(self.l2(jax.nn.gelu(self.l1(x_NF))))

  def __call__(self, x_NF):
    return self.head(self.features(x_NF))


class FeatureNet(NamedTuple):
  """A trained classifier's penultimate layer: features(x_NHWC) -> (N, 128) np.ndarray."""
  features: Callable
  heldout_accuracy: float


@functools.partial(jax.jit, static_argnames=("graphdef", "lr", "steps", "batch_size"))
def _train(graphdef, params, key, x_NF, y_N, lr, steps, batch_size):
  """All optimisation steps in one scan: one dispatch, batches drawn from `key`."""
  tx = optax.adamw(lr)

  def loss_fn(p, xb, yb):
    logits = nnx.merge(graphdef, p)(xb)
    return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

  def step(carry, k):
    p, opt = carry
    i = jax.random.randint(k, (batch_size,), 0, x_NF.shape[0])
    grads = jax.grad(loss_fn)(p, x_NF[i], y_N[i])
    updates, opt = tx.update(grads, opt, p)
    return (optax.apply_updates(p, updates), opt), None

  init = (params, tx.init(params))
  return jax.lax.scan(step, init, jax.random.split(key, steps))[0][0]


@functools.partial(jax.jit, static_argnames=("graphdef", "head"))
def _apply(graphdef, params, x_NF, head):
  model = nnx.merge(graphdef, params)
  return model(x_NF) if head else model.features(x_NF)


def _batched(graphdef, params, x, head, batch=1024):
  """Fixed-size batches so one compile serves any N."""
  x = _flat(x)
  out = [np.asarray(_apply(graphdef, params, jnp.asarray(part), head))[:n]
         for _, n, part, _ in _x_chunks(x, batch)]
  return np.concatenate(out)


def train_feature_net(x_NHWC, labels_N, num_classes, *, seed=0, steps=500, batch_size=128,
                      lr=1e-3):
  """Trains an MLP classifier on 90% of the data; its features give a learned space.

  This is a small classifier trained here, not Inception: distances in its space
  are comparable across runs of this project only.
  """
  x, y = _flat(x_NHWC), np.asarray(labels_N, np.int32)
  key_perm, key_init, key_train = jax.random.split(jax.random.PRNGKey(seed), 3)
  perm = np.asarray(jax.random.permutation(key_perm, len(x)))
  n_held = max(1, len(x) // 10)
  held, tr = perm[:n_held], perm[n_held:]
  graphdef, params = nnx.split(_MLP(x.shape[1], num_classes, nnx.Rngs(key_init)))
  params = _train(graphdef, params, key_train, jnp.asarray(x[tr]), jnp.asarray(y[tr]),
                  float(lr), steps, min(batch_size, len(tr)))
  pred = _batched(graphdef, params, x[held], head=True).argmax(-1)
  acc = float(np.mean(pred == y[held]))
  return FeatureNet(features=functools.partial(_batched, graphdef, params, head=False),
                    heldout_accuracy=acc)
