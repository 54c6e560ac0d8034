"""Masked fine-tuning: the full shape with the removed units held at zero."""
import types

import jax
import jax.numpy as jnp
import numpy as np

from dit_jax import config_check, pruning, sharding, state as state_lib, train_step
from dit_jax.models import dit
from tests.test_train import tiny


def _setup_and_state(config, scale=0.05):
  """A tiny model with random weights everywhere (every unit matters), in init_state's layout.

  Drawn in numpy: a jax draw per array shape compiles for seconds. At this scale
  the step is well conditioned: at test_pruning's 0.3 the loss is ~300, and 20
  Adam steps amplify rounding differences to 1e-2.
  """
  arch = dit.Arch(image_size=8, channels=1, patch=2, hidden=32, head_dim=8, heads=(4, 4),
                  mlp=(64, 64))
  setup = state_lib.make_setup(config, arch)
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda x: jnp.asarray(scale * rng.normal(size=x.shape), jnp.float32),
                        dit.abstract_model(arch)[1])
  return setup, {"params": params, "ema": params, "opt_state": setup.tx.init(params),
                 "step": jnp.zeros((), jnp.int32), "rng": jax.random.PRNGKey(1)}


def _on_removed(tree, masks):
  """The entries of a params-shaped tree that belong to removed units."""
  return np.concatenate([np.asarray(x)[np.asarray(m) == 0]
                         for x, m in zip(jax.tree.leaves(tree), jax.tree.leaves(masks))])


def _moments(opt_state, masks):
  """The params-shaped trees of the optimizer state: Adam's mu and nu."""
  like = lambda x: jax.tree.structure(x) == jax.tree.structure(masks)
  return [x for x in jax.tree.leaves(opt_state, is_leaf=like) if like(x)]


def test_masked_fine_tuning_equals_surgery_then_fine_tuning():
  # weight decay and clipping (the global norm is ~0.9) both in the path; an EMA
  # that follows the fine-tuning closely enough to tell
  config = config_check.finalize(tiny(None, **{"train.weight_decay": 0.1,
                                               "train.grad_clip": 0.1,
                                               "train.ema_decay": 0.9}))
  setup, state = _setup_and_state(config)
  data = types.SimpleNamespace(train_x=np.asarray(
      jax.random.normal(jax.random.PRNGKey(7), (32, 8, 8, 1))))
  mesh = sharding.make_mesh()
  rng = np.random.default_rng(0)  # block 1's MLP units score higher: the blocks lose unevenly
  scores = ([rng.random(4) for _ in range(2)], [rng.random(64) + 0.2 * b for b in range(2)])
  keep_h, keep_m = pruning.plan(scores, 0.2, 0.5)
  assert [len(k) for k in keep_h] == [3, 4] and [len(k) for k in keep_m] == [24, 40]
  masks = pruning.unit_masks(setup.arch, keep_h, keep_m)
  # masks that remove nothing give the plain step, compiled once with the masked one
  ones = jax.tree.map(jnp.ones_like, masks)
  state = train_step.run_steps(setup, config, mesh, state, data, 0, 5, ones)  # non-zero moments

  arch, cut = pruning.surgery(setup.arch, state, keep_h, keep_m)
  tuned = train_step.run_steps(state_lib.make_setup(config, arch), config, mesh, cut, data,
                               5, 20)
  masked = pruning.apply_masks(state, masks)
  full = train_step.run_steps(setup, config, mesh, masked, data, 5, 20, masks)
  assert full["params"]["blocks"][0]["qkv_w"].shape == (32, 3, 4, 8)
  _, kept = pruning.surgery(setup.arch, full, keep_h, keep_m)
  # within 2e-7: the key bias differs most, as its gradient is zero but for rounding
  # (a softmax ignores a constant added to a row) and Adam scales that noise up to steps
  for name in ("params", "ema", "opt_state"):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
                 tuned[name], kept[name])
  moments = _moments(full["opt_state"], masks)
  assert len(moments) == 2
  for tree in [full["params"], full["ema"], *moments]:
    assert not np.any(_on_removed(tree, masks))

  # nothing flows into or out of a removed unit, so its gradient is exactly zero: with
  # the moments zeroed too, even the plain step leaves it at zero ...
  again = train_step.run_steps(setup, config, mesh, masked, data, 5, 3, ones)
  assert not np.any(_on_removed(again["params"], masks))
  # ... and the masked step holds it at zero on its own: with the moments left
  # as they were, the plain step moves them off zero and the masked one does not
  stale = dict(masked, opt_state=state["opt_state"])
  plain = train_step.run_steps(setup, config, mesh, stale, data, 5, 3, ones)
  assert np.any(_on_removed(plain["params"], masks))
  held = train_step.run_steps(setup, config, mesh, stale, data, 5, 3, masks)
  assert not np.any(_on_removed(held["params"], masks))
