"""Every config builds, validates and has a runlocal mode; config arguments parse."""
import importlib

import pytest

from dit_jax import configlib

CONFIGS = ["default", "gmm", "cifar10_5k"]


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("arg", [None, "runlocal"])
def test_configs_validate(name, arg):
  config = importlib.import_module(f"configs.{name}").get_config(arg)
  configlib.validate(configlib.finalize(config))
  if arg == "runlocal":
    assert config.train.steps <= 50 and config.model.depth <= 2


def test_config_arguments():
  from configs import gmm
  config = gmm.get_config("n=128,d=32,variant=S/2")
  assert config.data.n_train == 128
  assert (config.data.image_size, config.data.channels) == (4, 2)
  assert config.model.variant == "S/2"
  with pytest.raises(ValueError, match="unknown"):
    gmm.get_config("nn=3")
  with pytest.raises(ValueError, match="d=33"):
    gmm.get_config("d=33")


def test_finalize_spells_out_per_block_widths():
  from configs import default
  config = configlib.finalize(default.get_config())
  assert config.model.heads == (4, 4, 4, 4)
  assert config.model.mlp == (512, 512, 512, 512)


def test_prune_sweep_points():
  import os
  path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "sweeps",
                      "prune_ratio.py")
  sweep = configlib.load_config_file(path)
  names = [p["name"] for p in sweep.get_sweep("seeds=2,ratios=0.2+0.4,methods=original+random")]
  assert names == ["original-s0", "random@0.2-s0", "random@0.4-s0",
                   "original-s1", "random@0.2-s1", "random@0.4-s1"]
  for data in ("digits", "gmm"):
    configlib.validate(configlib.finalize(sweep.get_config(f"data={data}")))


def test_bad_prune_fields():
  from configs import default
  for field, value, match in [("t_beta", (0.8,), "t_beta"), ("method", "taylor", "method"),
                              ("ratio", 1.0, "ratio"), ("at_step", 10**6, "at_step")]:
    config = default.get_config()
    config.prune[field] = value
    with pytest.raises(ValueError, match=rf"config\.prune\.{match}"):
      configlib.validate(configlib.finalize(config))
