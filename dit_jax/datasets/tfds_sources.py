"""TFDS sources: the project's own builders, prepared on first use, and any dataset a
user prepared with `tfds build NAME --file_format=array_record` (never downloaded here).

Records are read through tfds.data_source (array_record, random access), so no
TensorFlow is needed and a split reads only its own records.
"""
import jax
import numpy as np
import tensorflow_datasets as tfds

from dit_jax import distributed
from dit_jax.configlib import ConfigError
from dit_jax.datasets import crops as crops_lib
from dit_jax.datasets import digits as digits_lib
from dit_jax.datasets import gmm as gmm_lib
from dit_jax.datasets import source as source_lib


def prepare(name, data_dir=None, config=None):
  """Builds "digits", "crops", or "gmm" with config=gmm_config(...), once."""
  classes = {"digits": digits_lib.Digits, "crops": crops_lib.Crops, "gmm": gmm_lib.Gmm}
  if name not in classes:
    raise ConfigError(f"prepare() builds only {sorted(classes)}, got {name!r}.")
  make = lambda: classes[name](config=config, data_dir=data_dir, file_format="array_record")
  builder = make()
  if builder.is_prepared():
    return builder
  tfds.disable_progress_bar()
  # process 0 builds while the others wait: two builds into one shared data_dir
  # collide; a host whose data_dir is its own disk then builds its own copy
  if jax.process_index() == 0:
    builder.download_and_prepare(file_format="array_record")
  distributed.barrier(f"dit_jax_prepare_{name}_{builder.builder_config or ''}")
  builder = make()
  if not builder.is_prepared():
    builder.download_and_prepare(file_format="array_record")
  return builder


def _build_command(name, data_dir):
  command = f"tfds build {name} --file_format=array_record"
  return command + (f" --data_dir={data_dir}" if data_dir else "")


def prepared_builder(name, data_dir):
  """The builder of a TFDS dataset, never downloading: unprepared -> ConfigError."""
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise source_lib.unknown_name(name) from None
  if not builder.is_prepared():  # else tfds.data_source would start download_and_prepare
    raise ConfigError(f"TFDS dataset {name!r} is not prepared in {builder.data_dir_root}. "
                     f"Prepare it once with: {_build_command(name, data_dir)}")
  return builder


def _data_source(builder, name, data_dir):
  try:
    return builder.as_data_source(split="train")
  except (NotImplementedError, ValueError, KeyError) as e:
    raise ConfigError(f"TFDS dataset {name!r} in {builder.data_dir} has no array_record "
                     f"'train' split ({e}). Rebuild it into another data_dir (or delete "
                     f"it) with: {_build_command(name, data_dir)}") from e


def _read_records(source, ids):  # one array_record call for all ids
  return source.__getitems__([int(i) for i in ids])


def image_source(builder, name, data_dir, image_size):
  """uint8 'image' (+ ClassLabel 'label') records, resized and scaled to [-1, 1]."""
  features = builder.info.features
  if "image" not in features:
    raise ConfigError(f"TFDS dataset {name!r} has no 'image' feature: {sorted(features)}.")
  labeled = "label" in features and isinstance(features["label"], tfds.features.ClassLabel)
  source = _data_source(builder, name, data_dir)

  def read(ids):
    records = _read_records(source, ids)
    images = [np.asarray(r["image"]) for r in records]
    if images[0].dtype != np.uint8:
      raise ConfigError(f"TFDS dataset {name!r} stores {images[0].dtype} images; only "
                       "uint8 images are supported.")
    images = [im[..., None] if im.ndim == 2 else im for im in images]
    x = np.stack([source_lib.resize(im, image_size) for im in images])
    y = [r["label"] for r in records] if labeled else None
    return source_lib.to_model_space(x), source_lib.labels(y)

  shape = features["image"].shape  # (H, W, C), or (H, W) for a bare grayscale Tensor
  info = dict(name=name, size=len(source), value_range=[-1, 1],
              image_shape=[image_size, image_size, shape[-1] if len(shape) == 3 else 1])
  num_classes = features["label"].num_classes if labeled else 0
  return source_lib.Source(len(source), read, num_classes, info)


def gmm_source(config, conditional, data_dir):
  """Records of the gmm builder `config` (datasets.gmm_config), raw d-vectors."""
  builder = prepare("gmm", data_dir, config)
  source = _data_source(builder, "gmm", data_dir)

  def read(ids):
    records = _read_records(source, ids)
    x = np.stack([r["image"] for r in records]).astype(np.float32)
    return x, source_lib.labels([r["label"] for r in records]) if conditional else None

  meta = builder.info.metadata
  info = dict(name="gmm", size=len(source), image_shape=list(config.shape), value_range=None,
              gmm=dict(means=meta["means"], cov_diag=meta["cov_diag"],
                       weights=meta["weights"], config=config.name))
  return source_lib.Source(len(source), read, config.k if conditional else 0, info)
