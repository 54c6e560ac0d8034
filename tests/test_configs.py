"""Every config builds, validates and has a runlocal mode; config arguments parse."""
import importlib

import pytest

from dit_jax import config_check, configlib

CONFIGS = ["default", "gmm", "cifar10_5k"]


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("arg", [None, "runlocal"])
def test_configs_validate(name, arg):
  config = importlib.import_module(f"configs.{name}").get_config(arg)
  config_check.validate(config_check.finalize(config))
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
  config = config_check.finalize(default.get_config())
  assert config.model.heads == (4, 4, 4, 4)
  assert config.model.mlp == (512, 512, 512, 512)


def test_prune_sweep_points():
  import os
  path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "sweeps",
                      "prune_ratio.py")
  sweep = configlib.load_config_file(path)
  # the runlocal sweep (< 3 minutes): one budget holds random, head_grad, contrast, scratch
  local = [(p["method"], p["budget"]) for p in sweep.get_sweep("runlocal")]
  assert {("random", "h20m50"), ("head_grad", "h20m50"), ("contrast", "h20m50"),
          ("scratch", "h20m50")} <= set(local) and not [b for _, b in local if b == "h20"]
  points = sweep.get_sweep("seeds=2,budgets=h20m50+cap,methods=random+contrast")
  assert [p["name"] for p in points if p["overrides"]["seed"] == 1] == [
      "base-s1", "original-s1", "random@h20m50-s1", "contrast@h20m50-s1",
      "scratch@h20m50-s1", "capacity@cap-s1", "random@cap-s1"]
  # control=0: methods added to seeds whose control ran in another sweep
  assert [p["name"] for p in sweep.get_sweep("seeds=1,budgets=h20m50,methods=head_grad,"
                                             "scratch=,control=0")] == [
      "base-s0", "head_grad@h20m50-s0"]
  by_name = {p["name"]: p for p in points}
  # equal budgets: the same cut for every method; the capacity budget follows its search
  for name in ("random@h20m50-s0", "contrast@h20m50-s0"):
    over = by_name[name]["overrides"]
    assert (over["prune.ratio"], over["prune.mlp_ratio"]) == (0.2, 0.5)
    assert by_name[name]["start_from"] == ("base-s0", 4000)
  assert by_name["random@cap-s0"]["needs"]["prune.mlp_ratio"] == ("capacity@cap-s0",
                                                                   "prune.mlp_ratio")
  scratch = by_name["scratch@h20m50-s0"]
  assert "start_from" not in scratch and scratch["needs"]["model.heads"][0] == "contrast@h20m50-s0"
  assert scratch["overrides"]["train.steps"] == 6000
  assert by_name["original-s0"]["overrides"]["eval.at_steps"] == (4250, 4500, 5000, 6000)
  for data in ("digits", "gmm"):
    config = sweep.get_config(f"data={data}")
    config_check.validate(config_check.finalize(config))
    assert not config.prune.control  # "original" is every point's control
  with pytest.raises(ValueError, match="budget 'h30'"):
    sweep.get_sweep("budgets=h30")


def test_capacity_grid_points():
  import os
  path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "sweeps",
                      "capacity_grid.py")
  grid = configlib.load_config_file(path)
  points = grid.get_sweep("data=digits,widths=1+0.25,seed0=3,seeds=2")
  # digits' default ns: 32 and every image the select and test splits leave
  assert [p["name"] for p in points] == [f"n{n}-w{w}-s{s}" for s in (3, 4) for n in (32, 1041)
                                         for w in ("1", "0.25")]
  narrow = points[1]["overrides"]
  assert narrow["seed"] == 3 and narrow["model.heads"] == (1,) * 4
  assert narrow["model.mlp"] == (128,) * 4  # a quarter of 512, a multiple of 8
  config = grid.get_config("data=gmm")
  config_check.validate(config_check.finalize(config))
  assert config.model.head_dim * 4 == (config.model.hidden or 128)


def test_bad_prune_fields():
  from configs import default
  for field, value, match in [("t_beta", (0.8,), "t_beta"), ("method", "taylor", "method"),
                              ("ratio", 1.0, "ratio"), ("at_step", 10**6, "at_step")]:
    config = default.get_config()
    config.prune[field] = value
    with pytest.raises(ValueError, match=rf"config\.prune\.{match}"):
      config_check.validate(config_check.finalize(config))


def test_finetune_steps_is_a_floor_not_an_override():
  """A pruned run continued with more steps continues (finalize used to reset steps)."""
  from configs import default
  config = default.get_config("runlocal")
  config.prune.at_step, config.prune.finetune_steps, config.train.steps = 10, 5, 30
  assert config_check.finalize(config).train.steps == 30
  config_check.validate(config_check.finalize(config))
  config.train.steps = 12
  with pytest.raises(ValueError, match=r"config\.train\.steps=12 ends before .* = 15"):
    config_check.validate(config_check.finalize(config))


def test_finalize_is_idempotent_and_spells_out_the_model():
  from configs import default
  once = config_check.finalize(default.get_config())
  assert once.model.head_dim == 32 and once.model.depth == 4
  assert config_check.finalize(once).to_dict() == once.to_dict()


@pytest.mark.parametrize("arg", ["data=npz:images.npz", "data=folder:photos,size=16,channels=1",
                                 "data=folder:photos,runlocal"])
def test_own_data_config_takes_the_data_and_its_size(arg):
  from configs import own_data
  config = config_check.finalize(own_data.get_config(arg))
  config_check.validate(config)
  assert config.data.name.split(":")[0] in ("npz", "folder")
  assert config.prune.at_step < 0 and not config.prune.control  # no pruning unless asked
  if "size=16" in arg:
    assert (config.data.image_size, config.data.channels) == (16, 1)


def test_own_data_config_refuses_to_guess_the_data():
  from configs import own_data
  with pytest.raises(configlib.ConfigError, match="data=npz:PATH or data=folder:PATH"):
    own_data.get_config(None)
