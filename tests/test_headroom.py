"""Headroom for unit choice: mask and fine-tuning seeds, and the variance ratio read from them."""
import numpy as np
import pytest

from configs import default
from dit_jax import configlib, train, workdir as workdir_lib
from dit_jax.study import headroom


def _rows(mask_sd, rerun_sd, seeds=3, masks=32, reruns=8, seed=0):
  rng = np.random.default_rng(seed)
  rows = []
  for s in range(seeds):
    effects = rng.normal(0, mask_sd, masks)
    for j in range(masks):
      rows.append(dict(name=f"mask{j}-s{s}", method="mask", seed=s, ft_steps=10,
                       nll_gap=effects[j] + rng.normal(0, rerun_sd)))
    for r in range(1, reruns + 1):
      rows.append(dict(name=f"rerun{r}-s{s}", method="rerun", seed=s, ft_steps=10,
                       nll_gap=effects[0] + rng.normal(0, rerun_sd)))
  return rows


def test_variance_ratio_finds_a_mask_effect_only_where_there_is_one():
  none = headroom.variance_ratio(_rows(0.0, 1.0), "nll_gap")
  assert none["lo"] < 1 < none["hi"] and none["df_masks"] == 93 and none["df_reruns"] == 24
  assert "within noise" in headroom.verdict(none)
  big = headroom.variance_ratio(_rows(3.0, 1.0), "nll_gap")
  assert big["lo"] > 1 and "beyond" in headroom.verdict(big)
  assert "| nll_gap |" in headroom.table(_rows(3.0, 1.0), keys=("nll_gap",))


def _pruned_run(tmp_path, data_dir, name, mask, noise):
  config = configlib.with_overrides(default.get_config("runlocal"), {
      "data.data_dir": data_dir, "train.steps": 14, "prune.at_step": 10,
      "prune.method": "random", "prune.ratio": 0.5, "prune.mlp_ratio": 0.5,
      "prune.control": False, "prune.mask_seed": mask, "prune.finetune_seed": noise})
  w = str(tmp_path / name)
  train.train_and_evaluate(config, w)
  _, _, state, _ = workdir_lib.load(w)
  return np.concatenate([np.ravel(x) for x in __import__("jax").tree.leaves(state["params"])])


@pytest.mark.loop
def test_mask_and_finetune_seeds_each_change_only_their_part(tmp_path, data_dir):
  a = _pruned_run(tmp_path, data_dir, "a", 0, 0)
  again = _pruned_run(tmp_path, data_dir, "again", 0, 0)
  other_mask = _pruned_run(tmp_path, data_dir, "mask", 1, 0)
  other_noise = _pruned_run(tmp_path, data_dir, "noise", 0, 1)
  np.testing.assert_array_equal(a, again)
  assert a.shape == other_mask.shape == other_noise.shape  # the same budget
  assert not np.allclose(a, other_mask) and not np.allclose(a, other_noise)
