"""DiT properties: shapes, adaLN-Zero identity at init, patchify round trip, counts."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from dit_jax import configlib
from dit_jax.models import dit


def tiny_arch(**kw):
  base = dict(image_size=8, channels=1, patch=2, hidden=32, head_dim=8,
              heads=(4, 4), mlp=(64, 64), num_classes=0)
  base.update(kw)
  return dit.Arch(**base)


def test_patchify_round_trip():
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 8, 8, 3))
  p_BTP = dit.patchify(x, 2)
  assert p_BTP.shape == (3, 16, 12)
  np.testing.assert_array_equal(dit.unpatchify(p_BTP, 2, 3), x)
  # a patch holds a contiguous 2x2 square of pixels
  np.testing.assert_array_equal(p_BTP[0, 1].reshape(2, 2, 3), x[0, 0:2, 2:4])


def test_every_block_is_identity_at_init():
  model = dit.DiT(tiny_arch(num_classes=3), rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 16, 32))
  c = jax.random.normal(jax.random.PRNGKey(2), (2, 32))
  for block in model.blocks:
    np.testing.assert_array_equal(block(x, c), x)
  # and the zero-initialised final layer predicts zero noise
  out = model(jnp.ones((2, 8, 8, 1)), jnp.array([0.1, 0.9]), jnp.array([0, 3]))
  assert out.shape == (2, 8, 8, 1)
  np.testing.assert_array_equal(out, 0.0)


def test_uneven_blocks_and_counts():
  arch = tiny_arch(heads=(4, 1), mlp=(64, 8))
  graphdef, params = dit.abstract_model(arch)
  assert params["blocks"][1]["qkv_w"].shape == (32, 3, 1, 8)
  assert params["blocks"][1]["fc1_w"].shape == (32, 8)
  real = dit.init_params(arch, jax.random.PRNGKey(0))
  assert dit.num_params(arch) == sum(p.size for p in jax.tree.leaves(real))
  out = dit.apply(graphdef, real, jnp.zeros((1, 8, 8, 1)), jnp.zeros((1,)))
  assert out.shape == (1, 8, 8, 1)
  # pruning block 1 from 4 heads to 1 removes 3 heads' worth of attention FLOPs
  full = dit.flops_per_image(tiny_arch())
  t, dh = 16, 8
  per_head = 2 * t * 32 * 3 * dh + 2 * 2 * t * t * dh + 2 * t * dh * 32
  per_unit = 2 * 2 * t * 32
  assert full - dit.flops_per_image(arch) == 3 * per_head + 56 * per_unit


def model_cfg(**overrides):
  """config.model: the base config's, with overrides (of any type: checks must catch it)."""
  return ml_collections.ConfigDict(dict(configlib.base_config().model.to_dict(), **overrides))


def test_depth_follows_a_per_block_head_list():
  arch = dit.arch_from_config(model_cfg(heads=(4, 2, 1)), 8, 1, 0)
  assert arch.depth == 3 and arch.mlp == (512,) * 3 and arch.head_dim == 32


def test_default_preset_size():
  """The DESIGN's probe DiT: tiny/2 on 8x8x1 is about 1.3M parameters."""
  arch = dit.arch_from_config(model_cfg(variant="tiny/2"), 8, 1, 0)
  assert arch.heads == (4,) * 4 and arch.mlp == (512,) * 4 and arch.head_dim == 32
  assert 1.2e6 < dit.num_params(arch) < 1.4e6


@pytest.mark.parametrize("overrides, field", [
    (dict(variant="tiny/2", hidden=100, heads=3), "config.model.hidden"),
    (dict(variant="tiny/3"), "config.model.variant"),
    (dict(variant="huge/2"), "config.model.variant"),
    (dict(variant="tiny/2", heads=(4, 4), depth=3), "config.model.heads"),
    (dict(variant="tiny/2", mlp=(64, 0, 64, 64)), "config.model.mlp"),
    (dict(variant="tiny/4", dtype="int8"), "config.model.dtype"),
])
def test_bad_model_config(overrides, field):
  with pytest.raises(ValueError, match=field.replace(".", r"\.")):
    dit.arch_from_config(model_cfg(**overrides), 8, 1, 0)


def test_image_size_not_divisible_by_patch():
  with pytest.raises(ValueError, match=r"config\.data\.image_size=6"):
    dit.arch_from_config(model_cfg(variant="tiny/4"), 6, 1, 0)


def test_bfloat16_compute_keeps_float32_params_and_output():
  arch = tiny_arch(dtype="bfloat16")
  graphdef, _ = dit.abstract_model(arch)
  params = dit.init_params(arch, jax.random.PRNGKey(0))
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
  out = dit.apply(graphdef, params, jnp.ones((2, 8, 8, 1)), jnp.ones((2,)))
  assert out.dtype == jnp.float32


def test_cotangent_fence_keeps_values_and_gradients():
  """The XLA:CPU fence only reroutes the backward: same values, same gradients up to
  the order XLA sums in (the identity product itself is exact)."""
  arch = tiny_arch(heads=(4, 2), mlp=(64, 16))
  params = jax.tree.map(lambda p: p + 0.1, dit.init_params(arch, jax.random.PRNGKey(0)))
  x = jax.random.normal(jax.random.PRNGKey(1), (3, 8, 8, 1))
  t = jnp.array([0.1, 0.5, 0.9])

  def value_and_grad(fenced):
    graphdef, _ = dit.abstract_model(arch, fence=fenced)
    loss = lambda p: jnp.sum(dit.apply(graphdef, p, x, t) ** 2)
    return jax.jit(jax.value_and_grad(loss))(params), jax.jit(jax.grad(loss)).lower(
        params).as_text()

  ((v0, g0), text0), ((v1, g1), text1) = value_and_grad(False), value_and_grad(True)
  assert v0 == v1
  assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(g0))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8), g0, g1)
  assert text0.count("dot_general") < text1.count("dot_general")  # the fence's products
  assert dit.resolve_fence("auto") == (jax.default_backend() == "cpu")
  assert dit.resolve_fence("on") and not dit.resolve_fence("off")
  with pytest.raises(ValueError, match="config.model.fence"):
    dit.resolve_fence("maybe")


def test_labels_and_guidance_change_the_output():
  from dit_jax import configlib as cl, sampling, state as state_lib
  arch = tiny_arch(num_classes=3)
  params = dit.init_params(arch, jax.random.PRNGKey(0))
  # leave adaLN-Zero's identity so that the conditioning reaches the output
  params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.PRNGKey(1), p.shape),
                        params)
  graphdef, _ = dit.abstract_model(arch)
  x, t = jax.random.normal(jax.random.PRNGKey(2), (2, 8, 8, 1)), jnp.array([0.3, 0.6])
  out = lambda y: np.asarray(dit.apply(graphdef, params, x, t, y))
  y0, y1 = out(jnp.array([0, 0])), out(jnp.array([1, 1]))
  assert np.abs(y0 - y1).max() > 1e-3 and np.abs(y0 - out(None)).max() > 1e-3
  config = cl.base_config()
  setup = state_lib.make_setup(config, arch)

  def draw(guidance):
    scfg = cl.with_overrides(config, {"sample.guidance": guidance, "sample.steps": 4}).sample
    return np.asarray(sampling.make_sampler(setup, scfg, 4, None)(params,
                                                                   jax.random.PRNGKey(3)))
  assert np.abs(draw(1.0) - draw(3.0)).max() > 1e-3


@pytest.mark.parametrize("hidden", [32, 40, 20])
def test_cotangent_fence_backward_is_the_identity(hidden):
  """Blocks of 16 channels, or gcd(hidden, 16) where hidden is not a multiple of 16:
  the cotangent passes unchanged, bit for bit."""
  g = jax.random.normal(jax.random.PRNGKey(0), (2, 5, hidden))
  _, vjp = jax.vjp(dit._cotangent_fence, jnp.zeros_like(g))
  np.testing.assert_array_equal(vjp(g)[0], g)
