"""Sampling at scale into ADM-format shards (resumable, deterministic per shard) and
FID against an ADM reference batch in both its forms.

The model is the imported facebookresearch/DiT fixture (4x4x4 latents, 5 classes)
decoded by the diffusers-format VAE fixture into 32x32 RGB images.
"""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from dit_jax import adm, bulk_sampling, configlib, dit_import, fid, sampling
from dit_jax import workdir as workdir_lib
from dit_jax.configlib import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIT = os.path.join(ROOT, "tests", "data", "dit_interop", "dit_train.pt")
VAE = os.path.join(ROOT, "tests", "data", "vae_interop", "diffusion_pytorch_model.safetensors")
WEIGHTS = os.path.expanduser(configlib.base_config().eval.fid_weights)
DRAW = dict(num=10, batch=4, steps=2, vae=VAE)  # 3 shards: 4, 4 and 2 images


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  w = str(tmp_path_factory.mktemp("imported") / "w")
  dit_import.import_checkpoint(DIT, w, heads=2)
  return w


def _read(out):
  images, labels = [], []
  for i in adm.finished_shards(out):
    with np.load(adm.shard_path(out, i)) as f:
      images.append(f["arr_0"])
      labels.append(f["arr_1"])
  return np.concatenate(images), np.concatenate(labels)


@pytest.fixture(scope="module")
def resumed(workdir, tmp_path_factory):
  """Stopped after one shard, then run again to the end (and merged)."""
  out = str(tmp_path_factory.mktemp("resumed") / "samples")
  assert bulk_sampling.sample_to_shards(workdir, out, max_shards=1, **DRAW)[:2] == (1, 1)
  first = os.stat(adm.shard_path(out, 0)).st_mtime_ns
  new, have, merged = bulk_sampling.sample_to_shards(workdir, out, merge=True, **DRAW)
  assert (new, have) == (2, 3)
  assert os.stat(adm.shard_path(out, 0)).st_mtime_ns == first  # kept, not redrawn
  return out, merged


@pytest.mark.loop
def test_stopped_and_restarted_run_ends_with_three_shards_and_no_duplicates(resumed):
  out, merged = resumed
  assert adm.finished_shards(out) == [0, 1, 2]
  images, labels = _read(out)
  assert images.shape == (10, 32, 32, 3) and images.dtype == np.uint8
  assert len({im.tobytes() for im in images}) == 10
  assert labels.shape == (10,) and 0 <= labels.min() and labels.max() < 5
  with np.load(merged) as f:
    assert os.path.basename(merged) == "samples_10x32x32x3.npz"
    np.testing.assert_array_equal(f["arr_0"], images)
    np.testing.assert_array_equal(f["arr_1"], labels)


def test_a_resumed_run_draws_what_an_uninterrupted_one_does(workdir, resumed, tmp_path):
  bulk_sampling.sample_to_shards(workdir, str(tmp_path / "once"), **DRAW)
  np.testing.assert_array_equal(_read(str(tmp_path / "once"))[0], _read(resumed[0])[0])


def test_resume_with_other_settings_is_refused(workdir, resumed):
  with pytest.raises(ConfigError, match="seed: 0 there, 1 now"):
    bulk_sampling.sample_to_shards(workdir, resumed[0], **dict(DRAW, seed=1))


def test_given_labels_and_missing_vae(workdir, tmp_path):
  np.save(tmp_path / "y.npy", np.arange(10) % 5)
  out = str(tmp_path / "labeled")
  bulk_sampling.sample_to_shards(workdir, out, labels=str(tmp_path / "y.npy"), **DRAW)
  np.testing.assert_array_equal(_read(out)[1], np.arange(10) % 5)
  np.save(tmp_path / "bad.npy", np.full(10, 7))
  with pytest.raises(ConfigError, match=r"\[0, 5\)"):
    bulk_sampling.sample_to_shards(workdir, out, labels=str(tmp_path / "bad.npy"), **DRAW)
  with pytest.raises(ConfigError, match="--vae"):
    bulk_sampling.sample_to_shards(workdir, str(tmp_path / "x"), num=4, batch=4)


@pytest.mark.loop
def test_fid_against_a_reference_in_both_forms(resumed, tmp_path):
  out, _ = resumed
  net = fid.load(WEIGHTS)
  images, _ = _read(out)
  np.savez(tmp_path / "ref_images.npz", arr_0=images)  # the samples themselves
  mu, sigma = adm.reference_stats(net, str(tmp_path / "ref_images.npz"))
  np.savez(tmp_path / "ref_stats.npz", mu=mu, sigma=sigma)
  from_stats = adm.reference_stats(net, str(tmp_path / "ref_stats.npz"))
  np.testing.assert_array_equal(from_stats[0], mu)
  same, n = adm.fid_of_samples(net, out, (mu, sigma))
  assert n == 10 and abs(same) < 1e-2
  noise = np.random.default_rng(0).integers(0, 256, (10, 32, 32, 3), np.uint8)
  np.savez(tmp_path / "ref_noise.npz", arr_0=noise, mu=mu, sigma=sigma)
  # auto takes a file's mu/sigma; images recomputes them from arr_0
  assert adm.fid_of_samples(net, out, adm.reference_stats(
      net, str(tmp_path / "ref_noise.npz")))[0] == pytest.approx(same, abs=1e-6)
  other, _ = adm.fid_of_samples(net, out, adm.reference_stats(
      net, str(tmp_path / "ref_noise.npz"), source="images"))
  assert other > 10 * max(same, 1.0)
  with pytest.raises(ConfigError, match="no mu/sigma"):
    adm.reference_stats(net, str(tmp_path / "ref_images.npz"), source="stats")


@pytest.mark.loop
def test_fid_script_writes_its_row(resumed, tmp_path):
  out, merged = resumed
  np.savez(tmp_path / "ref.npz", arr_0=np.load(merged)["arr_0"])
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "fid.py"),
                         "--samples", merged, "--reference", str(tmp_path / "ref.npz")],
                        capture_output=True, text=True, check=False, cwd=ROOT)
  assert proc.returncode == 0, proc.stderr[-2000:]
  row = json.loads(proc.stdout.strip().splitlines()[-1])
  assert row["num_samples"] == 10 and abs(row["fid"]) < 1e-2
  with open(os.path.join(out, "fid.json"), encoding="utf-8") as f:
    assert json.load(f)["fid"] == row["fid"]


def test_a_workdir_imported_with_its_vae_decodes_by_itself(tmp_path):
  w = str(tmp_path / "w")
  dit_import.import_checkpoint(DIT, w, heads=2, vae=VAE)
  config = workdir_lib.read_config(w)
  assert (config.data.vae, config.data.image_size, config.data.channels) == (VAE, 32, 3)
  out = str(tmp_path / "s")
  bulk_sampling.sample_to_shards(w, out, num=4, batch=4, steps=2)  # no --vae: the config's
  assert _read(out)[0].shape == (4, 32, 32, 3)
  sampling.sample_to_png(w, str(tmp_path / "grid.png"), num=4, steps=2)
  assert Image.open(tmp_path / "grid.png").mode == "RGB"


def _sample_script(workdir, out, devices, process=None):
  """scripts/sample.py with `devices` fake CPU devices; process = (port, id) of 2."""
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             JAX_COMPILATION_CACHE_DIR=os.path.join(ROOT, ".jax_cache"))
  cmd = [sys.executable, os.path.join(ROOT, "scripts", "sample.py"), "--workdir", workdir,
         "--out", out, "--num", "10", "--batch", "4", "--steps", "2", "--vae", VAE, "--merge"]
  if process:
    cmd += [f"--coordinator=127.0.0.1:{process[0]}", "--num_processes=2",
            f"--process_id={process[1]}"]
  return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


@pytest.mark.loop
def test_two_processes_draw_their_shares_and_match_one(workdir, tmp_path):
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  two, one = str(tmp_path / "two"), str(tmp_path / "one")
  procs = [_sample_script(workdir, two, 2, (port, pid)) for pid in (0, 1)]
  procs.append(_sample_script(workdir, one, 2))
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  # process 0 drew shards 0 and 2, process 1 shard 1; process 0 merged after both
  assert "wrote 2 shards; 3 in" in outs[0][0] and "wrote 1 shards; 3 in" in outs[1][0]
  assert "merged into" in outs[0][0]
  np.testing.assert_array_equal(_read(two)[0], _read(one)[0])
  with np.load(os.path.join(two, "samples_10x32x32x3.npz")) as f:
    np.testing.assert_array_equal(f["arr_0"], _read(one)[0])
