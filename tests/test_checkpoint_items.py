"""Checkpoint items: evaluation and sampling restore the EMA weights alone, and a
checkpoint written before the state was split into items (a fixture written by that
code: tests/data/checkpoint_one_item) still restores, and a run resumes from it."""
import os
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from dit_jax import checkpointing, evaluate, sampling, train, workdir as workdir_lib

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                       "checkpoint_one_item")


def _old(tmp_path):
  w = str(tmp_path / "old")
  shutil.copytree(FIXTURE, w)
  return w


def _resaved(tmp_path):
  """The fixture's state saved by today's Checkpointer: one item per part."""
  _, _, state, meta = workdir_lib.load(_old(tmp_path))
  w = str(tmp_path / "new")
  ckpt = checkpointing.Checkpointer(os.path.join(w, "checkpoints"), async_save=False)
  ckpt.save(meta["step"], state, meta, force=True)
  ckpt.close()
  shutil.copy(os.path.join(FIXTURE, "config.json"), w)
  return w, state


@pytest.fixture
def read_items(monkeypatch):
  """The orbax items each CheckpointManager.restore call asked for."""
  calls = []
  real = ocp.CheckpointManager.restore

  def spy(self, step, args=None, **kw):
    calls.append(sorted(args.keys()))
    return real(self, step, args=args, **kw)

  monkeypatch.setattr(ocp.CheckpointManager, "restore", spy)
  return calls


def test_a_step_is_saved_as_items_and_the_ema_is_read_alone(tmp_path, read_items):
  w, state = _resaved(tmp_path)
  step_dir = os.path.join(w, "checkpoints", "2")
  assert {"params", "ema", "opt_state", "loop", "meta"} <= set(os.listdir(step_dir))
  assert "state" not in os.listdir(step_dir)
  _, _, ema_only, _ = workdir_lib.load(w, keys=("ema",))
  assert read_items[-1] == ["ema", "meta"]  # neither params nor Adam's moments were read
  assert list(ema_only) == ["ema"]
  jax.tree.map(np.testing.assert_array_equal, ema_only["ema"], state["ema"])


class _Loaded(Exception):
  pass


@pytest.mark.parametrize("tool", ["evaluate", "sample"])
def test_evaluate_and_sample_ask_for_the_ema_alone(tmp_path, monkeypatch, tool):
  asked = []

  def load(*args, **kwargs):
    asked.append(kwargs.get("keys"))
    raise _Loaded

  monkeypatch.setattr(workdir_lib, "load", load)
  with pytest.raises(_Loaded):
    if tool == "evaluate":
      evaluate.evaluate_workdir(str(tmp_path))
    else:
      sampling.sample_to_png(str(tmp_path), str(tmp_path / "s.png"))
  assert asked == [("ema",)]


def test_a_one_item_checkpoint_still_restores_and_a_run_resumes_from_it(
    tmp_path, data_dir, read_items):
  w = _old(tmp_path)
  assert "state" in os.listdir(os.path.join(w, "checkpoints", "2"))  # the old layout
  _, _, state, meta = workdir_lib.load(w)  # checksums verified against the old meta
  assert sorted(state) == ["ema", "opt_state", "params", "rng", "step"]
  assert meta["step"] == int(state["step"]) == 2
  _, _, ema_only, _ = workdir_lib.load(w, keys=("ema",))
  assert list(ema_only) == ["ema"]
  jax.tree.map(np.testing.assert_array_equal, ema_only["ema"], state["ema"])

  config = workdir_lib.read_config(w)
  config.data.data_dir, config.train.steps = data_dir, 4
  run = train.train_and_evaluate(config, w)  # resumes the old step, saves new ones
  assert int(run.state["step"]) == 4 and sorted(run.ckpt.all_steps())[-1] == 4
  assert "ema" in os.listdir(os.path.join(w, "checkpoints", "4"))
  _, _, resumed, _ = workdir_lib.load(w)
  assert int(resumed["step"]) == 4


def test_host_checksums_equal_the_jitted_ones():
  """The numpy sums a CPU process takes equal the jitted program's, bit for bit, for
  every dtype a state holds (so checkpoints written either way verify either way)."""
  rng = np.random.default_rng(0)
  state = {"f32": jax.numpy.asarray(rng.normal(size=(3, 70)), jax.numpy.float32),
           "bf16": jax.numpy.asarray(rng.normal(size=(33,)), jax.numpy.bfloat16),
           "i32": jax.numpy.arange(-5, 5, dtype=jax.numpy.int32),
           "u8": jax.numpy.arange(250, dtype=jax.numpy.uint8),
           "flag": jax.numpy.asarray([True, False, True]),
           "rng": jax.random.PRNGKey(7), "typed_key": jax.random.key(3)}
  host = checkpointing.checksums(state)
  jitted = {k: [int(v) for v in s] for k, s in
            jax.tree.map(lambda x: x, checkpointing._checksum_arrays(state)).items()}
  assert host == jitted
  assert host["f32"] != checkpointing.checksums(dict(state, f32=state["f32"] * 2))["f32"]
