"""Latent training end to end: 32x32 RGB crops encoded once by a random-weight kl-f8-shaped
VAE (the diffusers fixture), a DiT trained on the 4x4x4 latents, samples decoded for the
grid, FID and the memorization ratio in pixel space."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from configs import cifar10_5k
from dit_jax import config_check, configlib, data, dit_import, evaluate, latents, train
from dit_jax import workdir as workdir_lib
from dit_jax.configlib import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VAE = os.path.join(ROOT, "tests", "data", "vae_interop", "diffusion_pytorch_model.safetensors")
WEIGHTS = os.path.expanduser(configlib.base_config().eval.fid_weights)


def latent_config(tmp_path, data_dir, **more):
  weights = str(tmp_path / "cache" / "fid.npz")
  os.makedirs(os.path.dirname(weights), exist_ok=True)
  if not os.path.exists(weights):
    os.symlink(WEIGHTS, weights)  # reference statistics go beside it, into tmp_path
  return configlib.with_overrides(cifar10_5k.get_config("runlocal"), dict({
      "data.name": "crops", "data.data_dir": data_dir, "data.image_size": 32,
      "data.vae": VAE, "data.latent_dir": str(tmp_path / "latents"),
      "train.steps": 6, "checkpoint.every": 6, "memo.every": 3, "sample.every": 6,
      "eval.at_end": True, "eval.num": 8, "eval.fid": "on", "eval.fid_weights": weights},
      **more))


@pytest.mark.loop
def test_latent_run_writes_fid_and_pixel_space_mem_ratio(tmp_path, data_dir):
  w = str(tmp_path / "w")
  run = train.train_and_evaluate(latent_config(tmp_path, data_dir), w)
  assert run.setup.arch.image_size == 4 and run.setup.arch.channels == 4
  ev = json.load(open(os.path.join(w, "eval.json")))
  assert np.isfinite(ev["fid"]) and ev["fid_num_samples"] == 8
  assert 0 <= ev["mem_ratio"] <= 1 and ev["mem_space"] == latents.MEM_SPACE
  assert os.listdir(os.path.join(w, "samples")) == ["step_0000006.png"]
  assert Image.open(os.path.join(w, "samples", "step_0000006.png")).mode == "RGB"
  rows = [json.loads(l) for l in open(os.path.join(w, "metrics.jsonl"))]
  assert any("memo/train_loss" in r or "memo_ema/train_loss" in r for r in rows)


def test_latents_are_encoded_once_and_resume_part_by_part(tmp_path, data_dir, monkeypatch):
  cfg = latent_config(tmp_path, data_dir, **{"data.n_train": 300}).data
  monkeypatch.setattr(latents, "PART", 128)  # 300 + 32 + 32 images: 3 parts
  first = data.load(cfg, 0)
  folder = os.path.join(cfg.latent_dir, os.listdir(cfg.latent_dir)[0])
  assert sorted(os.listdir(folder)) == ["part_00000.npy", "part_00001.npy", "part_00002.npy"]
  assert first.train_x.shape == (300, 4, 4, 4) and first.pixels.train_x.shape == (300, 32, 32, 3)
  # an interrupted encoding: one part lost; only it is encoded again, to the same values
  kept = os.stat(os.path.join(folder, "part_00000.npy")).st_mtime_ns
  os.remove(os.path.join(folder, "part_00002.npy"))
  again = data.load(cfg, 0)
  assert os.stat(os.path.join(folder, "part_00000.npy")).st_mtime_ns == kept
  np.testing.assert_array_equal(again.test_x, first.test_x)
  z = latents._load(VAE)[0].encode(first.pixels.test_x[:2])
  np.testing.assert_allclose(first.test_x[:2], np.asarray(z), atol=1e-5)


def test_bad_vae_settings_fail_before_any_loading(tmp_path, data_dir):
  for overrides, match in (({"data.vae": str(tmp_path / "none.safetensors")}, "not a file"),
                           ({"data.image_size": 28}, "divisible by the VAE's")):
    config = latent_config(tmp_path, data_dir, **overrides)
    with pytest.raises(ConfigError, match=match):
      config_check.validate(config_check.finalize(config))


@pytest.mark.loop
def test_imported_dit_with_its_vae_evaluates_in_pixel_space(tmp_path):
  """scripts/evaluate.py's path on an imported latent DiT: encode, sample, decode, judge."""
  rng = np.random.default_rng(0)
  np.savez(tmp_path / "images.npz", images=rng.integers(0, 256, (48, 32, 32, 3), np.uint8),
           labels=np.arange(48) % 5)
  w = str(tmp_path / "w")
  dit_import.import_checkpoint(
      os.path.join(ROOT, "tests", "data", "dit_interop", "dit_train.pt"), w, heads=2,
      data_name=f"npz:{tmp_path / 'images.npz'}", vae=VAE)
  config = configlib.with_overrides(workdir_lib.read_config(w), {
      "data.n_train": 16, "data.n_select": 16, "data.n_test": 16,
      "data.latent_dir": str(tmp_path / "latents"), "sample.steps": 2,
      "eval.num": 8, "eval.feature_steps": 5})
  workdir_lib.write_config(config, w)
  summary = evaluate.evaluate_workdir(w)
  assert np.isfinite(summary["fid"]) and 0 <= summary["mem_ratio"] <= 1
  assert summary["mem_space"] == latents.MEM_SPACE and summary["step"] == 0
