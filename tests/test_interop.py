"""facebookresearch/DiT checkpoints into dit_jax: the imported model against the
reference's outputs, and the workdir it makes trained, sampled and pruned like ours.

tests/data/dit_interop/ was written once by bench/interop/make_dit_fixture.py in a
torch venv (random weights, DiT's key names and forward math); no torch here.
"""
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from dit_jax import configlib, dit_import, pruning, sampling, state, train
from dit_jax import workdir as workdir_lib
from dit_jax.configlib import ConfigError
from dit_jax.models import dit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests", "data", "dit_interop")


@pytest.fixture(scope="module")
def ref():
  with np.load(os.path.join(FIXTURE, "reference.npz")) as f:
    return dict(f)


def _output(workdir, x_NCHW, t, y, which="ema"):
  """The imported workdir's model on DiT's inputs, NCHW like the reference."""
  config, setup, st, _ = workdir_lib.load(workdir)
  net_t = setup.sched.net_time(t)
  out = dit.apply(setup.graphdef, st[which], np.transpose(x_NCHW, (0, 2, 3, 1)), net_t, y)
  return config, np.transpose(np.asarray(out), (0, 3, 1, 2))


def test_ema_file_matches_the_reference_eps_channels(tmp_path, ref):
  w = str(tmp_path / "w")
  config, arch, learn_sigma = dit_import.import_checkpoint(
      os.path.join(FIXTURE, "dit_ema.pt"), w, heads=2)
  assert learn_sigma and arch.num_classes == 10 and (arch.image_size, arch.patch) == (8, 2)
  assert config.model.pos_order == "col_row" and config.model.time_scale == 999.0
  _, out = _output(w, ref["ema_x"], ref["t"], ref["ema_y"])
  assert out.shape == (4, 4, 8, 8)  # 8 reference channels: eps kept, variance dropped
  np.testing.assert_allclose(out, ref["ema_out"][:, :4], atol=1e-5, rtol=0)
  # the null class (label 10) took part, and changing it changes the output
  assert np.abs(ref["ema_out"][3, :4] - ref["ema_out"][2, :4]).max() > 1e-2


def test_train_checkpoint_imports_model_as_params_and_ema_as_ema(tmp_path, ref):
  w = str(tmp_path / "w")
  _, arch, learn_sigma = dit_import.import_checkpoint(
      os.path.join(FIXTURE, "dit_train.pt"), w, heads=2)
  assert not learn_sigma and (arch.image_size, arch.patch, arch.depth) == (4, 1, 1)
  _, ema = _output(w, ref["train_x"], ref["t"], ref["train_y"])
  np.testing.assert_allclose(ema, ref["train_out"], atol=1e-5, rtol=0)
  _, live = _output(w, ref["train_x"], ref["t"], ref["train_y"], which="params")
  np.testing.assert_allclose(live, ref["train_model_out"], atol=1e-5, rtol=0)


def test_the_default_conventions_would_not_match(tmp_path, ref):
  """The two input options are what make the match: without them it fails."""
  w = str(tmp_path / "w")
  dit_import.import_checkpoint(os.path.join(FIXTURE, "dit_ema.pt"), w, heads=2)
  config, setup, st, _ = workdir_lib.load(w)
  for field, value in (("time_scale", 1000.0), ("pos_order", "row_col")):
    cfg = configlib.with_overrides(config, {f"model.{field}": value})
    s = state.make_setup(cfg, setup.arch)
    out = dit.apply(s.graphdef, st["ema"], np.transpose(ref["ema_x"], (0, 2, 3, 1)),
                    s.sched.net_time(ref["t"]), ref["ema_y"])
    err = np.abs(np.transpose(np.asarray(out), (0, 3, 1, 2)) - ref["ema_out"][:, :4]).max()
    assert err > 1e-3, field


def test_heads_come_from_the_variant_table_or_must_be_given(tmp_path):
  sd, _ = dit_import.read_state_dicts(os.path.join(FIXTURE, "dit_ema.pt"))
  with pytest.raises(ConfigError, match="--heads"):
    dit_import.infer(sd)
  # XL/2 at 256: shapes only (broadcast views, no memory), the head count from the table
  shapes = {"x_embedder.proj.weight": (1152, 4, 2, 2), "pos_embed": (1, 256, 1152),
            "final_layer.linear.weight": (32, 1152),
            "y_embedder.embedding_table.weight": (1001, 1152)}
  xl = {k: np.broadcast_to(np.float32(0), s) for k, s in shapes.items()}
  xl["pos_embed"] = dit.sincos_2d(1152, 16, "col_row")[None]
  for i in range(28):
    xl[f"blocks.{i}.mlp.fc1.weight"] = np.broadcast_to(np.float32(0), (4608, 1152))
  arch, order, learn_sigma = dit_import.infer(xl)
  assert (arch.heads[0], arch.depth, arch.image_size, arch.num_classes) == (16, 28, 32, 1000)
  assert order == "col_row" and learn_sigma
  assert dit_import.make_config(arch, order, "npz:x").model.variant == "XL/2"


def test_bad_inputs_are_refused_before_anything_is_written(tmp_path):
  busy = tmp_path / "busy"
  busy.mkdir()
  (busy / "notes.txt").write_text("mine")
  with pytest.raises(ConfigError, match="not empty"):
    dit_import.import_checkpoint(os.path.join(FIXTURE, "dit_ema.pt"), str(busy), heads=2)
  assert os.listdir(busy) == ["notes.txt"]
  junk = tmp_path / "junk.pt"
  junk.write_bytes(b"\x80\x02}q\x00.")  # a legacy (non-zip) pickle
  with pytest.raises(ConfigError, match="legacy format"):
    dit_import.import_checkpoint(str(junk), str(tmp_path / "w"))
  with pytest.raises(ConfigError, match="not a file"):
    dit_import.import_checkpoint(str(tmp_path / "missing.pt"), str(tmp_path / "w"))


@pytest.mark.loop
def test_imported_workdir_samples_trains_and_prunes(tmp_path, ref):
  w = str(tmp_path / "w")
  dit_import.import_checkpoint(os.path.join(FIXTURE, "dit_train.pt"), w, heads=2)
  sampling.sample_to_png(w, str(tmp_path / "s.png"), num=4, steps=3)
  assert os.path.getsize(tmp_path / "s.png") > 0
  # fine-tune on 4x4x4 data with 5 classes: the imported step 0 is resumed, not re-initialized
  rng = np.random.default_rng(0)
  np.savez(tmp_path / "lat.npz", images=rng.integers(0, 256, (64, 4, 4, 4), np.uint8),
           labels=np.arange(64) % 5)
  from_workdir = configlib.load_config_file(os.path.join(ROOT, "configs", "from_workdir.py"))
  with pytest.raises(ConfigError, match="workdir=DIR"):
    from_workdir.get_config(f"workdir={tmp_path}")
  config = configlib.with_overrides(from_workdir.get_config(f"workdir={w}"), {
      "data.name": f"npz:{tmp_path / 'lat.npz'}", "data.n_train": 16, "data.n_select": 16,
      "data.n_test": 16, "train.steps": 2, "train.batch_size": 4, "log_every": 1,
      "checkpoint.every": 2, "memo.every": 0, "eval.at_end": False, "sample.every": 0})
  run = train.train_and_evaluate(config, w)
  assert int(run.state["step"]) == 2
  _, _, st, _ = workdir_lib.load(w)
  start = workdir_lib.load(w, step=0)[2]
  moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()),
                       st["params"], start["params"])
  assert 0 < max(jax.tree.leaves(moved)) < 0.05  # small steps from the imported weights
  out = str(tmp_path / "pruned")
  _, record = pruning.prune_workdir(w, out, ratio=0.5, method="magnitude")
  assert record["heads"] == [1]


@pytest.mark.loop
def test_import_script_and_its_one_line_errors(tmp_path):
  cmd = [sys.executable, os.path.join(ROOT, "scripts", "import_dit.py"),
         "--checkpoint", os.path.join(FIXTURE, "dit_ema.pt"), "--workdir", str(tmp_path / "w")]
  proc = subprocess.run(cmd + ["--heads", "2"], capture_output=True, text=True, cwd=ROOT)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "learn_sigma's variance channels dropped" in proc.stdout
  assert os.path.exists(tmp_path / "w" / "config.json")
  again = subprocess.run(cmd + ["--heads", "2"], capture_output=True, text=True, cwd=ROOT)
  assert again.returncode != 0 and "Traceback" not in again.stderr
  assert "not empty" in again.stderr
  no_heads = subprocess.run(cmd[:-1] + [str(tmp_path / "w2")], capture_output=True,
                            text=True, cwd=ROOT)
  assert "pass --heads" in no_heads.stderr and "Traceback" not in no_heads.stderr
