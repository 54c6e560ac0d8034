"""Training data: three disjoint, seeded splits of a dataset, in memory.

  train   the n_train images the model is trained on (and memorizes);
  select  the only data that choosing reads: importance, the capacity search and
          the gap tracker's held-out probe;
  test    the only data that judging reads: quality references and the feature
          net that fd / precision / recall are measured in.
Data that chooses never judges. eval.json records each split's size and a
fingerprint of its record ids (`Dataset.splits()`).

config.data.name picks the source (dit_jax/datasets/ reads them):
  "digits"       scikit-learn's 8x8 digits through the project's TFDS builder.
  "crops"        5,000 32x32 RGB crops of scikit-learn's two sample photos (TFDS builder).
  "gmm"          samples of the paper's Gaussian mixture (TFDS builder, parameters in info).
  "npz:PATH"     a .npz with "images" (uint8 NHWC or NHW) and optional int "labels".
  "folder:PATH"  image files; one subfolder per class, or flat and unlabeled.
  anything else  a TFDS dataset prepared with `tfds build NAME --file_format=array_record`.
Images are float32 (n, H, W, C); uint8 sources are scaled to [-1, 1], gmm is raw.
"""
import dataclasses
import functools
import hashlib
import os

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from dit_jax import datasets
from dit_jax import latents
from dit_jax.configlib import ConfigError, check_int
from dit_jax.datasets import files
from dit_jax.datasets import source as source_lib
from dit_jax.datasets import tfds_sources

_SUBSET_SALT = 1234  # keeps the subset stream apart from the epoch streams of batch_indices


SPLITS = ("train", "select", "test")


@dataclasses.dataclass(frozen=True)
class Dataset:
  """In-memory arrays in model space; *_index are the source record ids of each row."""
  train_x: np.ndarray
  train_y: np.ndarray | None
  select_x: np.ndarray
  select_y: np.ndarray | None
  test_x: np.ndarray
  test_y: np.ndarray | None
  num_classes: int
  info: dict
  train_index: np.ndarray | None = None
  select_index: np.ndarray | None = None
  test_index: np.ndarray | None = None
  pixels: "Dataset | None" = None  # a latent run's images (dit_jax.latents), else None

  def splits(self):
    """{split: {size, fingerprint}}: what eval.json records to show which data did what."""
    out = {}
    for name in SPLITS:
      index = getattr(self, f"{name}_index")
      out[name] = {"size": int(len(getattr(self, f"{name}_x"))),
                   "fingerprint": fingerprint(index) if index is not None else None}
    return out


def fingerprint(ids):
  """12 hex digits of sha1 over the record ids, in order: equal ids, equal print."""
  return hashlib.sha1(np.asarray(ids, np.int64).tobytes()).hexdigest()[:12]


def _positive_int(value, field, low=1):
  check_int(value, f"data.{field}", low)


def _data_dir(cfg):
  return os.path.expanduser(cfg.data_dir) if cfg.data_dir else None


def _tfds_known(name, data_dir):
  """Registered in TFDS, or already prepared in data_dir (a builder without code)."""
  base = name.split("/")[0]  # "name/config" selects a TFDS builder config
  try:
    return bool(tfds.builder_cls(base))
  except tfds.core.registered.DatasetNotFoundError:
    return os.path.isdir(os.path.join(data_dir or tfds.core.constants.DATA_DIR, base))


def _check_gmm(cfg):
  g = cfg.gmm
  _positive_int(g.k, "gmm.k")
  _positive_int(g.size, "gmm.size")
  for field in ("scale", "cov_scale"):
    value = g[field]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
      raise ConfigError(f"config.data.gmm.{field} must be a number > 0, got {value!r}.")
  _positive_int(g.data_seed, "gmm.data_seed", low=0)
  if g.size < cfg.n_train + 2:
    raise ConfigError(f"config.data.gmm.size={g.size} must exceed config.data.n_train="
                      f"{cfg.n_train} by 2 or more so that select and test splits remain; "
                      "raise gmm.size.")
  _gmm_builder_config(cfg)  # validates cov_diag against d and the weights against k


def _gmm_builder_config(cfg):
  g = cfg.gmm
  return datasets.gmm_config(
      k=g.k, shape=(cfg.image_size, cfg.image_size, cfg.channels), scale=g.scale,
      cov_scale=g.cov_scale, cov_diag=g.cov_diag, weights=g.weights or None, size=g.size,
      data_seed=g.data_seed)


def check_config(cfg):
  """Cheap validation of config.data before any loading; ConfigError names the field."""
  name = cfg.name
  if not isinstance(name, str) or not name.strip():
    raise ConfigError(f"config.data.name must be a non-empty string such as 'digits', "
                      f"got {name!r}.")
  for field in ("n_train", "n_select", "n_test", "image_size", "channels"):
    _positive_int(cfg[field], field)
  if cfg.data_dir is not None and not isinstance(cfg.data_dir, str):
    raise ConfigError(f"config.data.data_dir must be a path string or None, got "
                      f"{cfg.data_dir!r}.")
  kind, colon, path = name.partition(":")
  if colon and kind in ("npz", "folder"):
    if not path:
      raise ConfigError(f"config.data.name={name!r} lacks a path; write '{kind}:PATH'.")
  elif name == "digits":
    if cfg.image_size != 8:
      raise ConfigError(f"config.data.image_size={cfg.image_size}, but digits is 8x8; "
                        "set image_size=8.")
    if cfg.n_train > datasets.digits.SIZE - 2:
      raise ConfigError(f"config.data.n_train={cfg.n_train} leaves too few of the "
                       f"{datasets.digits.SIZE} digits for the select and test splits; "
                       f"use at most {datasets.digits.SIZE - 2}.")
  elif name == "crops":
    if cfg.n_train > datasets.crops.SIZE - 2:
      raise ConfigError(f"config.data.n_train={cfg.n_train} leaves too few of the "
                       f"{datasets.crops.SIZE} crops for the select and test splits; "
                       f"use at most {datasets.crops.SIZE - 2}.")
  elif name == "gmm":
    _check_gmm(cfg)
  elif colon or not _tfds_known(name, _data_dir(cfg)):
    raise source_lib.unknown_name(name)
  if cfg.vae and name == "gmm":
    raise ConfigError("config.data.vae encodes images; gmm's raw vectors are none: set "
                      "config.data.vae=''.")
  latents.check_config(cfg)


def split_indices(seed, size, n_train, n_select, n_test):
  """Disjoint (train, select, test) record ids from one seeded permutation.

  train is a prefix, test the suffix and select the slice just before it, so
  select and test do not depend on n_train (unless they have to shrink): runs
  that sweep n_train choose and judge on the same images, and train sets nest.
  When fewer than n_select + n_test records remain, both shrink in proportion.
  """
  left = size - n_train
  if left < 2:
    raise ConfigError(f"config.data.n_train={n_train} leaves {max(left, 0)} of the dataset's "
                     f"{size} records for the select and test splits, which need one each; "
                     f"use a smaller n_train (at most {size - 2}).")
  want = n_select + n_test
  if left < want:
    n_test = min(n_test, max(1, round(left * n_test / want)), left - 1)
    n_select = left - n_test
    logging.warning("select and test splits shrunk to %d and %d of the %d records left.",
                    n_select, n_test, left)
  perm = np.random.default_rng([seed, _SUBSET_SALT]).permutation(size)
  test_start = size - n_test
  return perm[:n_train], perm[test_start - n_select:test_start], perm[test_start:]


@functools.lru_cache(maxsize=8)
def _epoch_permutation(seed, epoch, n):
  perm = np.random.default_rng([seed, epoch]).permutation(n)
  perm.flags.writeable = False  # shared through the cache
  return perm


def batch_indices(seed: int, step: int, n: int, batch_size: int) -> np.ndarray:
  """Training-set rows of batch `step`: a pure function, so resumed runs replay exactly.

  The stream visits a fresh permutation of range(n) each epoch; a batch may span epochs.
  """
  if min(seed, step) < 0 or n < 1 or batch_size < 1:
    raise ConfigError(f"batch_indices needs seed, step >= 0 and n, batch_size >= 1; got "
                     f"seed={seed}, step={step}, n={n}, batch_size={batch_size}.")
  epoch, offset = np.divmod(step * batch_size + np.arange(batch_size, dtype=np.int64), n)
  out = np.empty(batch_size, np.int64)
  for e in np.unique(epoch):
    rows = epoch == e
    out[rows] = _epoch_permutation(int(seed), int(e), int(n))[offset[rows]]
  return out


def _open(cfg):
  name, data_dir = cfg.name, _data_dir(cfg)
  kind, colon, path = name.partition(":")
  if colon and kind == "npz":
    return files.npz_source(os.path.expanduser(path), cfg.image_size)
  if colon and kind == "folder":
    return files.folder_source(os.path.expanduser(path), cfg.image_size)
  if name == "gmm":
    return tfds_sources.gmm_source(_gmm_builder_config(cfg), bool(cfg.conditional), data_dir)
  if name in ("digits", "crops"):
    builder = tfds_sources.prepare(name, data_dir)
  else:
    builder = tfds_sources.prepared_builder(name, data_dir)
  return tfds_sources.image_source(builder, name, data_dir, cfg.image_size)


def load(cfg, seed: int) -> Dataset:
  """The train, select and test splits of config.data for `seed` (non-negative).

  Only the selected records are read, so large TFDS datasets are cheap to subset.
  """
  check_config(cfg)
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ConfigError(f"data seed must be an integer >= 0, got {seed!r}.")
  source = _open(cfg)
  ids = split_indices(int(seed), source.size, cfg.n_train, cfg.n_select, cfg.n_test)
  train_bytes = 4 * len(ids[0]) * int(np.prod(source.info["image_shape"]))
  if train_bytes > cfg.max_memory_mb * 2 ** 20:
    logging.info("training split of %.0f MiB > config.data.max_memory_mb=%d: read per batch",
                 train_bytes / 2 ** 20, cfg.max_memory_mb)
    train_x = DiskRows(source.read, ids[0], source.info["image_shape"])
    train_y = _chunked_labels(source, ids[0]) if source.num_classes else None
  else:
    train_x, train_y = source.read(ids[0])
  (select_x, select_y), (test_x, test_y) = map(source.read, ids[1:])
  dataset = Dataset(train_x, train_y, select_x, select_y, test_x, test_y, source.num_classes,
                    dict(source.info, num_classes=source.num_classes), *ids)
  return latents.encode_dataset(cfg, dataset) if cfg.vae else dataset


class DiskRows:
  """The training split, read from its source on demand instead of held in memory.

  Indexes like the (n, H, W, C) array it stands for (positions, slices, index
  arrays), so a batch reads only its own rows; `chunks` streams it for what needs
  every row (nearest neighbours, the empirical score).
  """

  def __init__(self, read, ids, image_shape):
    self._read, self.ids = read, np.asarray(ids)
    self.shape = (len(self.ids), *image_shape)
    self.dtype = np.dtype(np.float32)

  def __len__(self):
    return self.shape[0]

  def __getitem__(self, index):
    pos = np.arange(len(self))[index]
    x, _ = self._read(self.ids[np.atleast_1d(pos)])
    return x if np.ndim(pos) else x[0]


def chunks(rows, size=4096):
  """(start, rows[start:start + size]) over an array or DiskRows."""
  for start in range(0, len(rows), size):
    yield start, np.asarray(rows[start:start + size])


def _chunked_labels(source, ids, size=4096):
  return np.concatenate([source.read(ids[s:s + size])[1] for s in range(0, len(ids), size)])
