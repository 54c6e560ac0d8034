"""Closed-form scores and the gap tracker against references and the paper's identities."""
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dit_jax import diffusion, memorization as memo

jax.config.update("jax_enable_x64", False)


def gmm_dataset(n=64, k=4, d=16, held=64, seed=0, cov=None):
  """A mixture like the paper's (mu_k ~ N(0, 4I)) as a Dataset-like namespace."""
  rng = np.random.default_rng(seed)
  means = rng.normal(0, 2, (k, d)).astype(np.float32)
  cov = np.ones(d, np.float32) if cov is None else np.asarray(cov, np.float32)
  def draw(m):
    comp = rng.integers(0, k, m)
    return (means[comp] + rng.normal(size=(m, d)) * np.sqrt(cov)).astype(np.float32)
  side = int(np.sqrt(d))
  info = {"gmm": {"means": means.tolist(), "cov_diag": cov.tolist(), "weights": [1 / k] * k}}
  return types.SimpleNamespace(train_x=draw(n).reshape(n, side, side, 1),
                               select_x=draw(held).reshape(held, side, side, 1), info=info)


def brute_denoiser(x, a, s, pts):
  x, pts = np.float64(x), np.float64(pts)
  logits = -((x[:, None] - a[:, None, None] * pts[None]) ** 2).sum(-1) / (2 * s[:, None] ** 2)
  w = np.exp(logits - logits.max(1, keepdims=True))
  return (w / w.sum(1, keepdims=True)) @ pts


def test_empirical_denoiser_matches_float64_and_its_limits():
  rng = np.random.default_rng(0)
  pts = rng.normal(size=(300, 12)).astype(np.float32)
  sched = diffusion.Schedule("vp")
  t = jnp.array([0.05, 0.3, 1.0, 3.0] * 5)
  a, s = map(np.asarray, sched.alpha_sigma(t))
  x = (a[:, None] * pts[:20] + s[:, None] * rng.normal(size=(20, 12))).astype(np.float32)
  got = np.asarray(memo.empirical_denoiser(jnp.asarray(x), jnp.asarray(a), jnp.asarray(s),
                                           jnp.asarray(pts), chunk=64))  # 300 = 4*64 + 44
  want = brute_denoiser(x, a, s, pts)
  assert np.max(np.abs(got - want)) / np.max(np.abs(want)) < 1e-4

  # tiny t: the training point itself; large t: the data mean
  a0, s0 = sched.alpha_sigma(jnp.full((5,), 1e-3))
  x0 = a0[:, None] * pts[:5] + s0[:, None] * rng.normal(size=(5, 12)).astype(np.float32)
  np.testing.assert_allclose(memo.empirical_denoiser(x0, a0, s0, jnp.asarray(pts)), pts[:5],
                             atol=1e-5)
  a1, s1 = sched.alpha_sigma(jnp.full((5,), 30.0))
  x1 = jnp.asarray(rng.normal(size=(5, 12)).astype(np.float32))
  np.testing.assert_allclose(memo.empirical_denoiser(x1, a1, s1, jnp.asarray(pts)),
                             np.broadcast_to(pts.mean(0), (5, 12)), atol=1e-3)


def test_gmm_score_is_the_gradient_of_the_log_density():
  ds = gmm_dataset(cov=np.linspace(0.3, 2.0, 16))
  params = memo.gmm_params(ds.info)
  x = jnp.asarray(np.random.default_rng(1).normal(0, 2, (6, 16)), jnp.float32)
  a, s = diffusion.Schedule("vp").alpha_sigma(jnp.array([0.01, 0.1, 0.5, 1.0, 2.0, 5.0]))
  logp = lambda x: memo.gmm_log_density(x, a, s, *params).sum()
  np.testing.assert_allclose(memo.gmm_score(x, a, s, *params), jax.grad(logp)(x),
                             rtol=1e-4, atol=1e-5)
  # a=1, s=0 is the data density itself: compare with scipy
  from scipy.stats import multivariate_normal
  means, cov, w = map(np.asarray, params)
  want = np.log(sum(wk * multivariate_normal(mk, np.diag(cov)).pdf(np.asarray(x))
                    for wk, mk in zip(w, means)))
  got = memo.gmm_log_density(x, jnp.ones(6), jnp.zeros(6), *params)
  np.testing.assert_allclose(got, want, rtol=1e-4)


def test_loss_gap_is_the_fisher_divergence():
  """Prop. 4.1: gt_loss - emp_loss = E_{P_hat_t} ||eps_emp - eps_gt||^2 (per dim)."""
  ds = gmm_dataset(n=32, d=16)
  params = memo.gmm_params(ds.info)
  pts = jnp.asarray(ds.train_x.reshape(32, -1))
  sched = diffusion.Schedule("vp")
  rng = jax.random.PRNGKey(0)
  reps, t = 64, 0.2
  x0 = jnp.repeat(pts, reps, axis=0)
  a, s = sched.alpha_sigma(jnp.full((len(x0),), t))

  def draw(key):
    eps = jax.random.normal(key, x0.shape)
    return a[:, None] * x0 + s[:, None] * eps, eps

  x, eps = draw(jax.random.fold_in(rng, 0))
  e_emp, e_gt = memo.empirical_eps(x, a, s, pts), memo.gmm_eps(x, a, s, *params)
  gap = np.asarray(((eps - e_gt) ** 2).mean(-1) - ((eps - e_emp) ** 2).mean(-1))
  x2, _ = draw(jax.random.fold_in(rng, 1))  # independent draws for the Monte Carlo side
  fisher = np.asarray(((memo.empirical_eps(x2, a, s, pts)
                        - memo.gmm_eps(x2, a, s, *params)) ** 2).mean(-1))
  se = np.hypot(gap.std() / np.sqrt(gap.size), fisher.std() / np.sqrt(fisher.size))
  assert gap.mean() > 0
  assert abs(gap.mean() - fisher.mean()) < 4 * se, (gap.mean(), fisher.mean(), se)


def test_tracker_index_is_one_for_the_empirical_and_zero_for_the_true_score():
  ds = gmm_dataset(n=48, d=16)
  sched = diffusion.Schedule("vp")
  tracker = memo.GapTracker(sched, ds, probe=16, buckets=4)
  params = memo.gmm_params(ds.info)
  pts = jnp.asarray(ds.train_x.reshape(48, -1))
  flat = lambda fn: (lambda x, t: fn(x.reshape(len(x), -1), *sched.alpha_sigma(t)).reshape(x.shape))
  emp = flat(lambda x, a, s: memo.empirical_eps(x, a, s, pts))
  gt = flat(lambda x, a, s: memo.gmm_eps(x, a, s, *params))
  half = lambda x, t: 0.5 * (emp(x, t) + gt(x, t))
  out = tracker.summarize({"emp": tracker.losses(emp), "gt": tracker.losses(gt),
                           "half": tracker.losses(half)})
  assert all(out[f"memo/loss_gap_t{b}"] >= 0 for b in range(4))
  # it estimates gt_loss - emp_loss (the same expectation, Prop. 4.1)
  assert out["memo/loss_gap"] == pytest.approx(out["memo/gt_loss"] - out["memo/emp_loss"],
                                               rel=0.3)
  # the gap is largest at small t (the paper's Thm. 4.3)
  assert out["memo/loss_gap_t0"] > out["memo/loss_gap_t3"]
  assert out["emp/index"] == pytest.approx(1.0, abs=1e-5)
  assert out["gt/index"] == pytest.approx(0.0, abs=1e-5)
  assert 0.2 < out["half/index"] < 0.95
  # the empirical score is much worse on held-out points than on its training points
  assert out["emp/gap_index"] == pytest.approx(1.0, abs=1e-5)
  assert out["gt/gap"] < out["emp/gap"]


def test_tracker_on_data_without_a_known_density():
  ds = gmm_dataset()
  ds.info = {}
  tracker = memo.GapTracker(diffusion.Schedule("ddpm_linear"), ds, probe=8, buckets=2)
  out = tracker.summarize({"memo": tracker.losses(lambda x, t: jnp.zeros_like(x))})
  assert "memo/gt_loss" not in out and "memo/index" not in out
  assert {"memo/train_loss", "memo/heldout_loss", "memo/gap", "memo/gap_index_t1"} <= set(out)
