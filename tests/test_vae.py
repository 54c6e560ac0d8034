"""The Flax kl-f8 VAE against diffusers' AutoencoderKL on a tiny random-weight fixture.

tests/data/vae_interop/ was written once by bench/interop/make_vae_fixture.py with
diffusers in a torch venv; no torch here.
"""
import json
import os
import shutil
import struct

import numpy as np
import pytest

from dit_jax import safetensors
from dit_jax.configlib import ConfigError
from dit_jax.models import vae

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests", "data", "vae_interop")
WEIGHTS = os.path.join(FIXTURE, "diffusion_pytorch_model.safetensors")


@pytest.fixture(scope="module")
def ref():
  with np.load(os.path.join(FIXTURE, "reference.npz")) as f:
    return dict(f)


@pytest.fixture(scope="module")
def model():
  return vae.load(WEIGHTS)


def _nhwc(x):
  return np.transpose(x, (0, 2, 3, 1))


def _close(got, want, rel=1e-4):
  err = np.abs(np.asarray(got) - want).max() / np.abs(want).max()
  assert err < rel, err


def test_config_read_from_tensors_and_config_json(model):
  cfg = model.cfg
  assert cfg.block_out_channels == (4, 4, 8, 8) and cfg.layers_per_block == 2
  assert (cfg.norm_num_groups, cfg.scaling_factor, cfg.downsample) == (2, 0.18215, 8)


def test_encoder_mean_matches_diffusers(model, ref):
  mean, _ = model.moments(_nhwc(ref["x"]))
  _close(mean, _nhwc(ref["mean"]))
  _close(model.encode(_nhwc(ref["x"])), _nhwc(ref["mean"]) * vae.SCALE)


def test_decoder_matches_diffusers(model, ref):
  # decode takes scaled latents, as a latent DiT produces them
  _close(model.decode(_nhwc(ref["z"]) * vae.SCALE), _nhwc(ref["decoded"]))


def _write_safetensors(path, tensors):
  """A minimal writer for the test: header JSON, then the raw little-endian buffers."""
  header, offset, blobs = {}, 0, []
  for name, a in tensors.items():
    a = np.ascontiguousarray(a, "<f4")
    header[name] = {"dtype": "F32", "shape": list(a.shape),
                    "data_offsets": [offset, offset + a.nbytes]}
    offset += a.nbytes
    blobs.append(a.tobytes())
  text = json.dumps(header).encode()
  with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def test_older_attention_names_load_to_the_same_model(tmp_path, model, ref):
  """Files saved by older diffusers name the mid-block attention query/key/value/proj_attn."""
  old = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
  renamed = {}
  for name, a in safetensors.load(WEIGHTS).items():
    for new, was in old.items():
      name = name.replace(f".{new}.", f".{was}.")
    renamed[name] = a
  assert any(".proj_attn." in k for k in renamed)
  path = tmp_path / "diffusion_pytorch_model.safetensors"
  _write_safetensors(path, renamed)
  shutil.copy(os.path.join(FIXTURE, "config.json"), tmp_path / "config.json")
  _close(vae.load(str(path)).decode(_nhwc(ref["z"]) * vae.SCALE), _nhwc(ref["decoded"]))


def test_bad_files_are_refused_with_the_reason(tmp_path):
  (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 64)
  with pytest.raises(ConfigError, match="not a .safetensors file"):
    safetensors.load(str(tmp_path / "junk.safetensors"))
  weights = safetensors.load(WEIGHTS)
  del weights["decoder.conv_out.bias"]
  _write_safetensors(tmp_path / "partial.safetensors", weights)
  with pytest.raises(ConfigError, match="decoder.conv_out.bias"):
    vae.load(str(tmp_path / "partial.safetensors"), groups=2)
