"""What every data source hands data.load, and the pixel conversions they share.

A source is a Source: its record count, read(ids) -> (x float32 NHWC, y int32 or None),
its number of classes and an info dict (name, image shape, value range, ...). Only the
records a split selects are ever read, so large datasets are cheap to subset.
"""
import collections

import numpy as np
from PIL import Image

from dit_jax.configlib import ConfigError

BUILTIN_NAMES = ("digits", "crops", "gmm", "npz:PATH", "folder:PATH")

Source = collections.namedtuple("Source", "size read num_classes info")


def unknown_name(name):
  return ConfigError(
      f"config.data.name={name!r} is not a known dataset: use one of the built-in "
      f"names {', '.join(BUILTIN_NAMES)}, or the name of a TFDS dataset.")


def resize(image, size):
  """uint8 (H, W, C) -> (size, size, C), PIL bilinear per channel; no-op when sized."""
  if image.shape[:2] == (size, size):
    return image
  planes = [np.asarray(Image.fromarray(image[..., c]).resize(
      (size, size), Image.Resampling.BILINEAR)) for c in range(image.shape[-1])]
  return np.stack(planes, axis=-1)


def to_model_space(images):  # uint8 -> [-1, 1]
  return images.astype(np.float32) / 127.5 - 1.0


def labels(y):  # int32 whatever the source stored
  return None if y is None else np.asarray(y, np.int32)
