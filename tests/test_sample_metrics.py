"""Sample metrics against float64 brute force, closed forms and scipy references."""
import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp

from dit_jax import sample_metrics as ev


def brute_two(x, ref):
  d = ((np.float64(x)[:, None] - np.float64(ref)[None]) ** 2).sum(-1)
  order = np.argsort(d, 1)
  return d[np.arange(len(x)), order[:, 0]], d[np.arange(len(x)), order[:, 1]], order[:, 0]


@pytest.mark.parametrize("chunk", [7, 64, None])
def test_nearest_two_matches_brute_force(chunk):
  rng = np.random.default_rng(0)
  x, ref = rng.normal(size=(45, 3, 2, 2)), rng.normal(size=(53, 3, 2, 2))  # 7 divides neither
  d1, d2, nn = ev.nearest_two(x, ref, chunk=chunk)
  b1, b2, bnn = brute_two(x.reshape(45, -1), ref.reshape(53, -1))
  np.testing.assert_allclose(d1, b1, rtol=1e-5)
  np.testing.assert_allclose(d2, b2, rtol=1e-5)
  np.testing.assert_array_equal(nn, bnn)


def test_nearest_two_exact_for_tiny_distances():
  """Memorized samples sit ~1e-3 from a training point far from the origin."""
  rng = np.random.default_rng(1)
  ref = rng.normal(10, 1, (30, 64))
  x = ref[:5] + rng.normal(0, 1e-3, (5, 64))
  d1, _, nn = ev.nearest_two(x, ref, chunk=8)
  np.testing.assert_allclose(d1, ((np.float64(x) - ref[:5]) ** 2).sum(-1), rtol=1e-3)
  np.testing.assert_array_equal(nn, np.arange(5))


def test_nearest_two_needs_two_refs():
  with pytest.raises(ValueError):
    ev.nearest_two(np.zeros((3, 4)), np.zeros((1, 4)))


def test_memorization_ratio():
  rng = np.random.default_rng(0)
  train = rng.normal(size=(2000, 16))
  copies = train[rng.integers(0, 2000, 200)] + rng.normal(0, 1e-3, (200, 16))
  assert ev.memorization_ratio(*ev.nearest_two(copies, train)[:2]) == 1.0
  fresh = rng.normal(size=(200, 16))
  assert ev.memorization_ratio(*ev.nearest_two(fresh, train)[:2]) < 0.02
  counts, edges = ev.d_ratio_histogram(*ev.nearest_two(fresh, train)[:2], bins=10)
  assert counts.sum() == 200 and edges[0] == 0 and edges[-1] == 1


def brute_pr(real, fake, k):
  def radii(a):
    d = ((a[:, None] - a[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)  # a point is not its own neighbour
    return np.sort(d, 1)[:, k - 1]
  d_fr = ((fake[:, None] - real[None]) ** 2).sum(-1)
  return (d_fr <= radii(real)[None]).any(1).mean(), (d_fr.T <= radii(fake)[None]).any(1).mean()


def test_precision_recall_matches_brute_force():
  rng = np.random.default_rng(2)
  real, fake = rng.normal(size=(130, 6)), rng.normal(0.3, 1.2, (110, 6))
  np.testing.assert_allclose(ev.precision_recall(real, fake, k=3, chunk=17),
                             brute_pr(real, fake, 3))


def test_precision_recall():
  rng = np.random.default_rng(0)
  real = rng.normal(size=(600, 4))
  assert ev.precision_recall(real, real) == (1.0, 1.0)
  p, r = ev.precision_recall(real, rng.normal(size=(600, 4)), chunk=100)
  assert p > 0.9 and r > 0.9
  p, r = ev.precision_recall(real, rng.normal(size=(600, 4)) + 20)
  assert p < 0.01 and r < 0.01


def test_precision_recall_mode_dropping():
  rng = np.random.default_rng(1)
  centre = np.zeros(4)
  centre[0] = 20
  real = np.concatenate([rng.normal(size=(300, 4)), rng.normal(size=(300, 4)) + centre])
  fake = rng.normal(size=(600, 4))  # only the first cluster
  p, r = ev.precision_recall(real, fake)
  assert p > 0.9 and 0.4 < r < 0.6


def test_frechet_distance():
  rng = np.random.default_rng(0)
  d = 8
  assert abs(ev.frechet_distance(rng.normal(size=(20000, d)), rng.normal(size=(20000, d)))) \
      < 0.05 * d
  mu_a, mu_b = rng.normal(size=d), rng.normal(size=d)
  var_a, var_b = rng.uniform(0.5, 2, d), rng.uniform(2, 5, d)
  a = mu_a + rng.normal(size=(50000, d)) * np.sqrt(var_a)
  b = mu_b + rng.normal(size=(50000, d)) * np.sqrt(var_b)
  exact = ((mu_a - mu_b) ** 2).sum() + ((np.sqrt(var_a) - np.sqrt(var_b)) ** 2).sum()
  assert abs(ev.frechet_distance(a, b) - exact) < 0.05 * exact


def test_feature_net_on_digits():
  from sklearn.datasets import load_digits
  digits = load_digits()
  x = (digits.images / 8.0 - 1.0).reshape(-1, 8, 8, 1).astype(np.float32)
  net = ev.train_feature_net(x, digits.target, 10, seed=0, steps=300)
  assert net.heldout_accuracy > 0.85
  feats = net.features(x[:1030])  # not a whole number of batches
  assert feats.shape == (1030, 128) and feats.dtype == np.float32
  again = ev.train_feature_net(x, digits.target, 10, seed=0, steps=300)
  assert again.heldout_accuracy == net.heldout_accuracy
  np.testing.assert_array_equal(again.features(x[:50]), feats[:50])


def ref_gmm_logp(x, means, cov, weights):
  comps = [np.log(w) + stats.multivariate_normal(m, np.diag(cov)).logpdf(x)
           for m, w in zip(means, weights)]
  return logsumexp(np.stack(comps, -1), axis=-1)


@pytest.mark.parametrize("weights", [None, [0.5, 0.2, 0.3]])
def test_log_likelihood_gmm(weights):
  rng = np.random.default_rng(0)
  d = 16
  means = rng.normal(0, 2, (3, d))
  cov = rng.uniform(0.2, 3.0, d)
  x = means[rng.integers(0, 3, 100)] + rng.normal(size=(100, d)) * np.sqrt(cov)
  x = np.concatenate([x, rng.normal(0, 6, (20, d))])  # far tails: log-sum-exp matters
  ref = ref_gmm_logp(x, means, cov, np.full(3, 1 / 3) if weights is None else weights)
  got = ev.log_likelihood_gmm(x.reshape(-1, 4, 4, 1), means, cov, weights)
  np.testing.assert_allclose(got, ref, rtol=1e-4)
  np.testing.assert_allclose(ev.gmm_nll_per_dim(x, means, cov, weights), -ref.mean() / d,
                             rtol=1e-4)


def test_d_ratio_is_the_distance_ratio_and_zero_where_both_are_zero():
  # squared distances: (1, 4) -> 1/2; (0, 0) -> 0 (a sample on two identical images)
  assert np.allclose(ev.d_ratio([1.0, 9.0, 0.0], [4.0, 9.0, 0.0]), [0.5, 1.0, 0.0])
  counts, _ = ev.d_ratio_histogram([1.0, 9.0, 0.0], [4.0, 9.0, 0.0], bins=4)
  assert counts.tolist() == [1, 0, 1, 1]
