"""The ADM evaluator's .npz format (Dhariwal & Nichol's guided-diffusion evaluations).

Sample batches: `arr_0` uint8 (N, H, W, C) images and, for class-conditional
models, `arr_1` int labels. Reference batches (e.g. VIRTUAL_imagenet256_labeled.npz)
hold `arr_0` images and, precomputed, `mu` / `sigma` of their Inception pool3
features. Sampling at scale writes one shard per fixed batch into a folder,
`shard_000000.npz` ..., each written whole under a temporary name and renamed,
so a shard that exists is complete; the merged file is `samples_NxHxWxC.npz`,
the name the ADM scripts give theirs.
"""
import glob
import json
import os
import re
import zipfile

import numpy as np

from dit_jax import fid as fid_lib
from dit_jax import sample_metrics
from dit_jax.configlib import ConfigError

SETTINGS = "sampling.json"  # what the shards were drawn with; a resume must match it
_SHARD = re.compile(r"shard_(\d{6})\.npz$")


def shard_path(out, index):
  return os.path.join(out, f"shard_{index:06d}.npz")


def finished_shards(out):
  """Indices of the complete shards in `out` (temporary files are not shards)."""
  names = (os.path.basename(p) for p in glob.glob(os.path.join(out, "shard_*.npz")))
  return sorted(int(m.group(1)) for m in map(_SHARD.match, names) if m)


def write_shard(out, index, images, labels=None):
  """One shard, atomically: a crash leaves a temporary file, never half a shard."""
  arrays = {"arr_0": np.asarray(images, np.uint8)}
  if labels is not None:
    arrays["arr_1"] = np.asarray(labels, np.int64)
  path = shard_path(out, index)
  tmp = f"{path}.{os.getpid()}.tmp.npz"
  np.savez(tmp, **arrays)
  os.replace(tmp, path)


def check_settings(out, settings, write=True):
  """Records the settings of a new folder (when `write`), or refuses a resume that
  differs from them."""
  file = os.path.join(out, SETTINGS)
  if os.path.exists(file):
    with open(file, encoding="utf-8") as f:
      old = json.load(f)
    differ = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
    if differ:
      detail = "; ".join(f"{k}: {old.get(k)!r} there, {settings.get(k)!r} now" for k in differ)
      raise ConfigError(f"{out} holds samples drawn with other settings ({detail}). Resume "
                        "with the same flags, or give another --out (nothing was changed).")
    return False
  os.makedirs(out, exist_ok=True)
  if not write:
    return False
  tmp = f"{file}.{os.getpid()}.tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(settings, f, indent=2, sort_keys=True)
  os.replace(tmp, file)
  return True


def merge(out, num):
  """All shards into one `samples_NxHxWxC.npz`, streamed: 50,000 256px images are 9.8 GB."""
  shards = [shard_path(out, i) for i in finished_shards(out)]
  with np.load(shards[0]) as f:
    shape, labeled = f["arr_0"].shape[1:], "arr_1" in f.files
  path = os.path.join(out, "samples_" + "x".join(map(str, (num,) + shape)) + ".npz")
  tmp = f"{path}.{os.getpid()}.tmp.npz"
  with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
    for key, dtype, tail in (("arr_0", np.uint8, shape), ("arr_1", np.int64, ())):
      if key == "arr_1" and not labeled:
        continue
      with z.open(f"{key}.npy", "w", force_zip64=True) as member:
        np.lib.format.write_array_header_2_0(member, {
            "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
            "fortran_order": False, "shape": (num,) + tuple(tail)})
        for s in shards:
          with np.load(s) as f:
            member.write(np.ascontiguousarray(f[key], dtype).tobytes())
  os.replace(tmp, path)
  return path


def sample_files(samples):
  """The .npz files --samples names: a folder's shards (or its merged file), or one file."""
  if os.path.isfile(samples):
    return [samples]
  files = [shard_path(samples, i) for i in finished_shards(samples)]
  files = files or sorted(glob.glob(os.path.join(samples, "samples_*.npz")))[:1]
  if not files:
    raise ConfigError(f"--samples {samples}: no shard_*.npz or samples_*.npz there; give "
                      "the folder scripts/sample.py --out wrote, or an ADM-format .npz.")
  return files


def reference_stats(net, path, source="auto", cache_dir=None, batch=50):
  """(mu, sigma) of an ADM reference batch: its precomputed `mu`/`sigma`, or its `arr_0`
  images through the offline Inception. source: auto (the stats when present, as the
  ADM evaluator does) | stats | images."""
  if not os.path.isfile(path):
    raise ConfigError(f"--reference {path} is not a file: give an ADM reference batch "
                      "(.npz with arr_0 images, or mu and sigma).")
  with np.load(path) as f:
    has_stats, has_images = {"mu", "sigma"} <= set(f.files), "arr_0" in f.files
    if source == "stats" or (source == "auto" and has_stats):
      if not has_stats:
        raise ConfigError(f"--reference {path} holds no mu/sigma; use --reference_from=images.")
      return np.asarray(f["mu"], np.float64), np.asarray(f["sigma"], np.float64)
    if not has_images:
      raise ConfigError(f"--reference {path} holds no arr_0 images (keys: {f.files}).")
    images = f["arr_0"]
  _check_images(images, path)
  if cache_dir:
    return fid_lib.reference_fit(net, images, os.path.basename(path), cache_dir, batch=batch)
  return sample_metrics.gaussian_fit(fid_lib.features(net, images, batch=batch))


def _check_images(images, path):
  if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ConfigError(f"{path}: arr_0 must be uint8 (N, H, W, 1 or 3), got "
                      f"{images.dtype} {images.shape}.")


def fid_of_samples(net, samples, reference, batch=50):
  """(FID, number of samples) of the samples against reference (mu, sigma)."""
  feats = []
  for file in sample_files(samples):
    with np.load(file) as f:
      images = f["arr_0"]
    _check_images(images, file)
    feats.append(fid_lib.features(net, images, batch=batch))
  feats = np.concatenate(feats)
  fit = sample_metrics.gaussian_fit(feats)
  return float(sample_metrics.frechet_from_fits(*fit, *reference)), len(feats)
