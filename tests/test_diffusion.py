"""Schedules, loss weighting and samplers."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dit_jax import diffusion

SCHEDS = [diffusion.Schedule("ddpm_linear"), diffusion.Schedule("ddpm_cosine"),
          diffusion.Schedule("vp", t0=1e-3, t_max=10.0)]


@pytest.mark.parametrize("sched", SCHEDS, ids=lambda s: s.kind)
def test_schedule_identities(sched):
  t = sched.grid(100)[::-1]  # increasing
  a, s = map(np.asarray, sched.alpha_sigma(t))
  np.testing.assert_allclose(a ** 2 + s ** 2, 1.0, atol=1e-6)  # variance preserving
  assert np.all(np.diff(a) < 0) and np.all(np.diff(s) > 0)
  assert a[0] > 0.99 and a[-1] < 0.01
  u = sched.net_time(t)
  assert float(u.min()) >= 0.0 and float(u.max()) <= 1.0


def test_vp_is_the_papers_ou_process():
  sched = diffusion.Schedule("vp")
  t = jnp.array([0.01, 0.5, 3.0])
  a, s = sched.alpha_sigma(t)
  np.testing.assert_allclose(a, np.exp(-np.asarray(t) / 2), rtol=1e-6)
  np.testing.assert_allclose(s ** 2, 1 - np.exp(-np.asarray(t)), rtol=1e-5)
  ts = sched.sample_t(jax.random.PRNGKey(0), (10000,))
  assert float(ts.min()) >= sched.t0 and float(ts.max()) <= sched.t_max
  assert abs(float(ts.mean()) - (sched.t0 + sched.t_max) / 2) < 0.1


def test_ddpm_linear_matches_the_definition():
  sched = diffusion.Schedule("ddpm_linear")
  a, _ = sched.alpha_sigma(jnp.array([0, 999]))
  betas = np.linspace(1e-4, 0.02, 1000)
  np.testing.assert_allclose(a ** 2, [1 - betas[0], np.prod(1 - betas)], rtol=1e-4)
  idx = sched.sample_t(jax.random.PRNGKey(0), (5000,))
  assert idx.dtype == jnp.int32 and int(idx.min()) == 0 and int(idx.max()) == 999


def test_score_weighting_divides_by_variance():
  sched = diffusion.Schedule("vp")
  x0 = jnp.ones((4, 2, 2, 1))
  t = jnp.array([0.01, 0.1, 1.0, 5.0])
  noise = jnp.zeros_like(x0)
  eps_fn = lambda x, t: jnp.ones_like(x)  # error 1 everywhere
  plain = diffusion.per_example_loss(eps_fn, sched, x0, t, noise, "eps")
  score = diffusion.per_example_loss(eps_fn, sched, x0, t, noise, "score")
  _, s = sched.alpha_sigma(t)
  np.testing.assert_allclose(plain, 1.0)
  np.testing.assert_allclose(score, 1.0 / s ** 2, rtol=1e-5)


def _gaussian_eps(sched, mean, var):
  """Exact eps-prediction for data x0 ~ N(mean, var I)."""
  def eps_fn(x, t):
    a, s = sched.alpha_sigma(t)
    a, s = a[:, None, None, None], s[:, None, None, None]
    return s * (x - a * mean) / (a ** 2 * var + s ** 2)
  return eps_fn


def _sample(sched, method, steps, seed=0, mean=0.5, var=0.04):
  run = jax.jit(lambda k: diffusion.sample(_gaussian_eps(sched, mean, var), sched, k,
                                           (2000, 2, 2, 1), method=method, steps=steps))
  return np.asarray(run(jax.random.PRNGKey(seed)))


@pytest.mark.parametrize("sched", SCHEDS, ids=lambda s: s.kind)
@pytest.mark.parametrize("method,steps", [("ddim", 250), ("heun", 50), ("ddpm", 1000)])
def test_samplers_recover_a_gaussian(sched, method, steps):
  """With the exact eps of N(0.5, 0.2^2), each sampler converges to that law."""
  x = _sample(sched, method, steps)
  assert abs(x.mean() - 0.5) < 0.02
  assert abs(x.std() - 0.2) < 0.01
  # deterministic for a seed, different across seeds
  np.testing.assert_array_equal(x, _sample(sched, method, steps))
  assert not np.allclose(x, _sample(sched, method, steps, seed=1))


def test_heun_is_more_accurate_than_ddim_per_step():
  sched = SCHEDS[0]
  err = lambda m: abs(_sample(sched, m, 25).std() - 0.2)
  assert err("heun") < 0.5 * err("ddim")


def test_unknown_sampler():
  with pytest.raises(ValueError, match="config.sample.method"):
    diffusion.sample(lambda x, t: x, SCHEDS[0], jax.random.PRNGKey(0), (1, 2, 2, 1),
                     method="euler")


def test_ddpm_tables_are_float64_before_the_cast():
  for kind in ("ddpm_linear", "ddpm_cosine"):
    sched = diffusion.Schedule(kind)
    a64, s64 = sched.tables()
    np.testing.assert_allclose(a64 ** 2 + s64 ** 2, 1.0, rtol=1e-12)
    a, s = sched.alpha_sigma(jnp.arange(1000))
    # within float32 rounding everywhere, small t included (the float32 form was 8e-5 off)
    np.testing.assert_allclose(np.asarray(s), s64, rtol=2e-7)
    np.testing.assert_allclose(np.asarray(a), a64, rtol=2e-7)


def test_ddim_grid_skips_the_clipped_cosine_step():
  cosine = diffusion.Schedule("ddpm_cosine")
  a, _ = cosine.tables()
  grid = cosine.grid(50)
  assert grid[0] == 998 and grid[-1] == 0
  assert a[grid[1]] / a[grid[0]] < 25  # was 632 from t = 999, where beta is clipped
  assert diffusion.Schedule("ddpm_linear").grid(50)[0] == 999  # nothing clipped there
