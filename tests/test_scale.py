"""Gradient accumulation, rematerialisation and bfloat16 against the plain float32 step."""
import jax
import jax.numpy as jnp
import numpy as np

from dit_jax import config_check, configlib, sharding, state as state_lib, train_step
from dit_jax.models import dit
from tests.test_train import tiny


def one_step(**overrides):
  """(loss, params before, params after) one step of the runlocal model on a fixed
  batch of 32."""
  config = config_check.finalize(tiny(None, **{"train.batch_size": 32, "train.warmup_steps": 0,
                                               **overrides}))
  arch = dit.arch_from_config(config.model, 8, 1, 0)
  setup = state_lib.make_setup(config, arch)
  state = state_lib.init_state(setup, jax.random.PRNGKey(0))
  # leave adaLN-Zero's identity so that every parameter gets a gradient
  params = jax.tree.map(lambda p: p + 0.02 * jax.random.normal(jax.random.PRNGKey(1), p.shape),
                        state["params"])
  before = jax.tree.map(np.asarray, params)
  state = dict(state, params=params, ema=jax.tree.map(jnp.copy, params))
  mesh = sharding.make_mesh()
  step = train_step.jit_train_step(setup, config, sharding.shardings_of(state, mesh), mesh)
  x = np.random.default_rng(0).uniform(-1, 1, (32, 8, 8, 1)).astype(np.float32)
  new, metrics = step(state, sharding.put_batch({"x": x}, mesh))
  return float(metrics["train/loss"]), before, new["params"]


def test_four_micro_batches_of_8_equal_one_batch_of_32():
  config = config_check.finalize(tiny(None))
  setup = state_lib.make_setup(config, dit.arch_from_config(config.model, 8, 1, 0))
  params = jax.tree.map(lambda p: p + 0.02 * jax.random.normal(jax.random.PRNGKey(1), p.shape),
                        state_lib.init_state(setup, jax.random.PRNGKey(0))["params"])
  rng = np.random.default_rng(0)
  x = rng.uniform(-1, 1, (32, 8, 8, 1)).astype(np.float32)
  t, noise = rng.integers(0, 1000, 32), rng.normal(size=x.shape).astype(np.float32)
  whole = train_step._loss_and_grads(setup, config, params, x, None, t, noise)
  micro = train_step._accumulated(setup, config, params, x, None, t, noise, 4)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-8), micro, whole)
  # and through the jitted step: the same loss, and parameters within 0.1% of an update
  loss1, _, p1 = one_step()
  loss4, _, p4 = one_step(**{"train.grad_accum": 4})
  np.testing.assert_allclose(loss4, loss1, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-6), p4, p1)


def test_remat_gives_the_same_step():
  loss1, _, p1 = one_step()
  loss2, _, p2 = one_step(**{"train.remat": True})
  assert loss2 == loss1
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8), p2, p1)


def test_a_bfloat16_step_is_close_to_float32():
  loss32, p0, p32 = one_step()
  loss16, _, p16 = one_step(**{"model.dtype": "bfloat16"})
  np.testing.assert_allclose(loss16, loss32, rtol=2e-2)  # bf16 keeps 8 mantissa bits
  assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(p16))  # float32 parameters
  flat = lambda p: jnp.concatenate([jnp.ravel(a) for a in jax.tree.leaves(p)])
  d32, d16 = flat(p32) - flat(p0), flat(p16) - flat(p0)
  cos = float(jnp.dot(d32, d16) / (jnp.linalg.norm(d32) * jnp.linalg.norm(d16)))
  assert cos > 0.95  # the update points the same way


def test_batch_and_accumulation_must_divide_over_the_devices():
  config = config_check.finalize(tiny(None, **{"train.batch_size": 12, "train.grad_accum": 8}))
  import pytest
  with pytest.raises(configlib.ConfigError, match=r"config\.train\.batch_size=12 .* multiple of 8"):
    config_check.validate(config)
