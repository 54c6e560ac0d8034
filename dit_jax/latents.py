"""Latent diffusion: a dataset encoded once by the VAE, and samples decoded for judging.

config.data.vae names a diffusers-format .safetensors autoencoder (kl-f8 for the
DiT recipe). The train, select and test splits' images are encoded into scaled
latent means (deterministic, so every run of the same data reads the same latents;
fast-DiT stores one posterior draw instead) and cached under config.data.latent_dir
in a folder named by a hash of the VAE file and the records. Each process encodes
its share of fixed-size parts; a part is written whole and renamed, so an
interrupted encoding resumes where it stopped.

The model trains on the latents (channels = the VAE's latent channels, side =
image_size / 8). Everything that judges (memorization ratio, FID, precision and
recall, nearest-neighbour plots, sample grids) decodes the samples and compares
them with the original images, in pixel space, as papers on latent models do.
"""
import dataclasses
import hashlib
import json
import os

import jax
import numpy as np
import tqdm
from flax import nnx
from jax.experimental import multihost_utils

from dit_jax import safetensors
from dit_jax.configlib import ConfigError
from dit_jax.models import vae as vae_lib

PART = 256  # images per encoded part (and per jitted encoder call)
MEM_SPACE = "pixels: VAE-decoded samples against the training images"
_vaes = {}  # path -> (model, jitted encode, jitted decode), loaded once per process


def check_config(cfg):
  """config.data.vae / latent_dir: the file reads, and image_size suits its down-sampling."""
  if not cfg.vae:
    return
  path = os.path.expanduser(cfg.vae)
  if not os.path.isfile(path):
    raise ConfigError(f"config.data.vae={cfg.vae!r} is not a file: give a diffusers "
                      "AutoencoderKL .safetensors (e.g. sd-vae-ft-ema's "
                      "diffusion_pytorch_model.safetensors), or '' for pixel space.")
  factor = downsample(path)
  if cfg.image_size % factor:
    raise ConfigError(f"config.data.image_size={cfg.image_size} is not divisible by the "
                      f"VAE's down-sampling factor {factor}; use a multiple of it.")


def downsample(path):
  """The VAE's spatial factor, from the file's tensor names (header only)."""
  names = safetensors.names(os.path.expanduser(path))
  blocks = {n.split(".")[2] for n in names if n.startswith("encoder.down_blocks.")}
  if not blocks:
    raise ConfigError(f"config.data.vae={path!r} holds no encoder.down_blocks: not a "
                      "diffusers AutoencoderKL file.")
  return 2 ** (len(blocks) - 1)


def model_image_size(cfg):
  """The side the model sees: the image's, or the latents' for a latent run."""
  return cfg.image_size // downsample(cfg.vae) if cfg.vae else cfg.image_size


def _load(path):
  path = os.path.expanduser(path)
  if path not in _vaes:
    model = vae_lib.load(path)
    graphdef, state = nnx.split(model)
    _vaes[path] = (model,
                   jax.jit(lambda s, x: nnx.merge(graphdef, s).encode(x)),
                   jax.jit(lambda s, z: nnx.merge(graphdef, s).decode(z)), state)
  return _vaes[path]


def _run_in_parts(fn, state, x):
  """fn over x in fixed parts of PART rows (the last padded): one compile for any n."""
  out = []
  for s in range(0, len(x), PART):
    part = x[s:s + PART]
    pad = np.zeros((PART - len(part),) + part.shape[1:], part.dtype)
    out.append(np.asarray(fn(state, np.concatenate([part, pad])))[:len(part)])
  return np.concatenate(out)


def decode(dataset, z):
  """Samples of a latent run as images (value range [-1, 1]); other runs unchanged."""
  if getattr(dataset, "pixels", None) is None:
    return z
  return decode_file(dataset.info["latent"]["vae"], z)


def decode_file(path, z):
  """Latents -> images in [-1, 1] with the VAE at `path` (loaded once per process)."""
  _, _, dec, state = _load(path)
  return np.clip(_run_in_parts(dec, state, np.asarray(z, np.float32)), -1.0, 1.0)


def pixel_dataset(dataset):
  """The dataset that judging reads: the images of a latent run, else itself (also
  any dataset-like object without a `pixels` field)."""
  pixels = getattr(dataset, "pixels", None)
  return dataset if pixels is None else pixels


def _fingerprint(path, dataset):
  h = hashlib.sha1()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(2 ** 20), b""):
      h.update(block)
  for name in ("train", "select", "test"):
    h.update(np.asarray(getattr(dataset, f"{name}_index"), np.int64).tobytes())
  h.update(json.dumps([dataset.info["name"], list(dataset.train_x.shape[1:])]).encode())
  return h.hexdigest()[:16]


def _encode_all(cfg, dataset, images):
  """Latents of `images` (the three splits, stacked), through the cache on disk."""
  path = os.path.expanduser(cfg.vae)
  folder = os.path.join(os.path.expanduser(cfg.latent_dir), _fingerprint(path, dataset))
  os.makedirs(folder, exist_ok=True)
  parts = -(-len(images) // PART)
  part_path = lambda i: os.path.join(folder, f"part_{i:05d}.npy")
  mine = [i for i in range(parts) if i % jax.process_count() == jax.process_index()
          and not os.path.exists(part_path(i))]
  if mine:
    _, enc, _, state = _load(path)
    for i in tqdm.tqdm(mine, desc=f"encoding {len(images)} images into latents",
                       unit="part", disable=jax.process_index() != 0):
      z = _run_in_parts(enc, state, images[i * PART:(i + 1) * PART])
      tmp = f"{part_path(i)}.{os.getpid()}.tmp.npy"
      np.save(tmp, z.astype(np.float32))
      os.replace(tmp, part_path(i))  # a part that exists is whole
  if jax.process_count() > 1:  # every process reads every part
    multihost_utils.sync_global_devices("dit_jax_latents")
  return np.concatenate([np.load(part_path(i)) for i in range(parts)])


def encode_dataset(cfg, dataset):
  """The latent view of a pixel dataset (its images kept in `pixels` for judging)."""
  if not isinstance(dataset.train_x, np.ndarray):
    raise ConfigError("config.data.vae: latent runs hold the training images in memory; "
                      "raise config.data.max_memory_mb or lower config.data.n_train.")
  splits = [dataset.train_x, dataset.select_x, dataset.test_x]
  z = _encode_all(cfg, dataset, np.concatenate(splits).astype(np.float32))
  a, b = len(splits[0]), len(splits[0]) + len(splits[1])
  model = _load(cfg.vae)[0]
  info = dict(dataset.info, value_range=None, image_shape=list(z.shape[1:]),
              latent={"vae": os.path.expanduser(cfg.vae), "scale": model.cfg.scaling_factor,
                      "pixel_shape": list(dataset.train_x.shape[1:]),
                      "mem_space": MEM_SPACE})
  return dataclasses.replace(dataset, train_x=z[:a], select_x=z[a:b], test_x=z[b:],
                             info=info, pixels=dataset)
