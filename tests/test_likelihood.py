"""The probability-flow ODE likelihood: exact against closed-form densities, and the
train/test gap it opens for a memorizing score."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dit_jax import configlib, diffusion, likelihood, memorization, sample_metrics
from dit_jax.configlib import ConfigError

D, K = 16, 4


def _mixture(seed=0):
  rng = np.random.default_rng(seed)
  means = (2.0 * rng.normal(size=(K, D))).astype(np.float32)
  return means, (jnp.asarray(means), jnp.ones(D), jnp.full(K, 1 / K))


def _draws(means, n, seed):
  rng = np.random.default_rng(seed)
  return (means[rng.integers(0, K, n)] + rng.normal(size=(n, D))).astype(np.float32)


def _gmm_eps(g, x, t, a, s):
  return memorization.gmm_eps(x, a, s, *g)


def _empirical_eps(train_ND, x, t, a, s):
  flat = x.reshape(len(x), -1)
  return memorization.empirical_eps(flat, a, s, train_ND).reshape(x.shape)


def _exact_logp(sched, x, g):
  """log p at the ODE's starting noise level (s = 0.01 for ddpm_linear)."""
  lam0, _ = likelihood.lambda_range(sched)
  a0 = 1 / np.sqrt(1 + np.exp(2 * lam0))
  n = len(x)
  return np.asarray(memorization.gmm_log_density(jnp.asarray(x), jnp.full(n, a0),
                                                 jnp.full(n, a0 * np.exp(lam0)), *g))


@pytest.mark.parametrize("kind", ["ddpm_linear", "vp"])
def test_true_score_ode_nll_is_the_exact_log_density(kind):
  sched = diffusion.Schedule(kind=kind)
  means, g = _mixture()
  x = _draws(means, 400, seed=1)
  exact = _exact_logp(sched, x, g)
  for opts in (likelihood.Options(rtol=1e-4, atol=1e-4),
               likelihood.Options(rtol=1e-5, atol=1e-5, divergence="exact")):
    logp, steps = likelihood.log_likelihood(_gmm_eps, sched, x, jax.random.PRNGKey(0), opts, g)
    diff = (logp - exact) / D
    se = diff.std(ddof=1) / np.sqrt(len(diff))
    assert abs(diff.mean()) < 3 * se + 2e-5, (opts.divergence, diff.mean(), se)
    assert 0 < max(steps) < 200
  # Hutchinson's probe noise is what its standard error measures: not zero, not huge
  assert 1e-5 < se < 0.01 or opts.divergence == "exact"


def test_empirical_score_gap_is_large_and_the_true_scores_is_not():
  sched = diffusion.Schedule()
  means, g = _mixture()
  train, test = _draws(means, 16, seed=2), _draws(means, 32, seed=3)
  splits = {"test": test, "train": train}
  key, opts = jax.random.PRNGKey(1), likelihood.Options()
  memorizing = likelihood.model_nll(_empirical_eps, sched, splits, key, opts,
                                    params=jnp.asarray(train))
  truth = likelihood.model_nll(_gmm_eps, sched, splits, key, opts, params=g)
  # the empirical score puts all its mass on the 16 training points (s_0 = 0.01 around them)
  assert memorizing["train_nll"] < truth["train_nll"] - 2
  assert memorizing["nll_gap"] > 20 * max(truth["nll_gap"], 0.01)
  assert abs(truth["nll_gap"]) < 3 * truth["nll_gap_se"] + 0.01
  assert truth["nll_unit"] == "nats/dim" and "tsit5" in truth["nll_method"]
  assert truth["test_nll_num"] == 32 and truth["train_nll_num"] == 16


def test_dequantized_bits_per_dim():
  """A uniform density on [-1, 1]^D gives each of 256 levels probability 1/256: 8 bits."""
  x = np.linspace(-1, 1, 256, dtype=np.float32)[:, None].repeat(4, 1)
  xd, width = likelihood.dequantize(x, jax.random.PRNGKey(0), (-1, 1))
  assert np.all(np.abs(xd - x) <= width / 2 + 1e-7) and np.std(xd - x) > width / 5
  logp = np.full(len(x), 4 * np.log(1 / 2.0))  # density 1/2 per dimension on [-1, 1]
  bits, se = likelihood.summarize(logp, 4, width)
  np.testing.assert_allclose(bits, np.log2(255), rtol=0, atol=1e-9)
  assert se == 0


def test_energy_distance_is_zero_for_one_distribution_and_grows_with_a_shift():
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(600, 8)), rng.normal(size=(600, 8))
  same = sample_metrics.energy_distance(a, b)
  shifted = sample_metrics.energy_distance(a, b + 0.5)
  assert abs(same) < 0.05 and shifted > 10 * abs(same) and shifted > 0.1
  # against the definition, written out pair by pair on a few rows
  x, y = a[:5], b[:7] + 1
  dxy = np.mean([np.linalg.norm(p - q) for p in x for q in y])
  dxx = np.mean([np.linalg.norm(p - q) for i, p in enumerate(x) for j, q in enumerate(x) if i != j])
  dyy = np.mean([np.linalg.norm(p - q) for i, p in enumerate(y) for j, q in enumerate(y) if i != j])
  np.testing.assert_allclose(sample_metrics.energy_distance(x, y), 2 * dxy - dxx - dyy,
                             rtol=1e-6)


@pytest.mark.parametrize("field,value", [("nll_solver", "euler"), ("nll_divergence", "trace"),
                                         ("nll_num", -1), ("nll_rtol", 0.0)])
def test_bad_likelihood_settings_name_the_field(field, value):
  ecfg = configlib.base_config().eval
  ecfg[field] = value
  with pytest.raises(ConfigError, match=f"eval.{field}"):
    likelihood.check_config(ecfg)


@pytest.mark.loop
def test_a_gmm_run_writes_its_likelihood_to_eval_json(tmp_path, data_dir):
  from configs import gmm
  from dit_jax import data as data_lib, train, workdir as workdir_lib
  config = configlib.with_overrides(gmm.get_config("runlocal"), {
      "data.data_dir": data_dir, "data.n_train": 16, "eval.at_end": True,
      "eval.nll_num": 24})
  train.train_and_evaluate(config, str(tmp_path / "w"))
  ev = workdir_lib.read_eval(str(tmp_path / "w"))
  for key in ("test_nll", "train_nll", "nll_gap", "test_nll_se", "train_nll_se", "nll_gap_se",
              "nll_excess", "energy_distance"):
    assert np.isfinite(ev[key]), key
  assert ev["test_nll_num"] == 24 and ev["train_nll_num"] == 16
  assert ev["nll_excess"] == pytest.approx(abs(ev["nll"] - ev["nll_test_data"]))
  # the empirical score of the same 16 training points, measured the same way
  ds = data_lib.load(config.data, config.seed)
  splits = {"test": ds.test_x[:24], "train": ds.train_x[:16]}
  memorizing = likelihood.model_nll(_empirical_eps, diffusion.Schedule(), splits,
                                    jax.random.PRNGKey(0), likelihood.Options(),
                                    params=jnp.asarray(ds.train_x.reshape(16, -1)))
  assert memorizing["nll_gap"] > ev["nll_gap"] + 1.0
