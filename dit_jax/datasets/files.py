"""Sources from files: an .npz of arrays ("npz:PATH") or a folder of images ("folder:PATH").

Both are checked when opened, with errors that say how to fix the file, and resized
to config.data.image_size as records are read.
"""
import os
import zipfile

import numpy as np
from PIL import Image

from dit_jax.configlib import ConfigError
from dit_jax.datasets import source as source_lib

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def _npz_error(path, problem, fix):
  return ConfigError(f"npz dataset {path}: {problem}. {fix}")


def load_npz(path):
  """(images uint8 (N, H, W, C), labels int or None), validated."""
  save_hint = "Save it with np.savez(path, images=uint8 (N, H, W, C) array, labels=ints)."
  if not os.path.isfile(path):
    raise _npz_error(path, "file not found", "Check the path after 'npz:'.")
  try:
    npz = np.load(path, allow_pickle=False)
  except (OSError, ValueError, zipfile.BadZipFile) as e:
    raise _npz_error(path, f"not a readable .npz ({e})", save_hint) from e
  if not isinstance(npz, np.lib.npyio.NpzFile):
    raise _npz_error(path, "holds a single array, not an .npz archive", save_hint)
  with npz:
    if "images" not in npz.files:
      raise _npz_error(path, f"missing key 'images' (keys: {npz.files})", save_hint)
    images = npz["images"]
    labels = npz["labels"] if "labels" in npz.files else None
  if images.ndim == 3:  # grayscale N, H, W
    images = images[..., None]
  if images.ndim != 4:
    raise _npz_error(path, f"'images' has shape {images.shape}", "Use (N, H, W[, C]).")
  if images.shape[0] == 0:
    raise _npz_error(path, "'images' is empty", "Store at least 2 images.")
  if images.dtype != np.uint8:
    raise _npz_error(path, f"'images' dtype is {images.dtype}, not uint8", "Convert, e.g. "
                     "np.round(x * 255).astype(np.uint8) for values in [0, 1].")
  if images.shape[-1] not in (1, 3, 4):
    raise _npz_error(path, f"'images' has {images.shape[-1]} channels", "Use 1, 3 or 4.")
  if labels is not None and (labels.shape != images.shape[:1] or labels.dtype.kind not in
                             "iu" or labels.min() < 0):
    raise _npz_error(path, f"'labels' ({labels.dtype} {labels.shape}) does not match "
                     f"{images.shape[0]} images", "Store one integer >= 0 per image.")
  return images, labels


def npz_source(path, image_size):
  """An .npz of uint8 'images' (N, H, W[, C]) and optional int 'labels'."""
  images, labels = load_npz(path)

  def read(ids):
    x = np.stack([source_lib.resize(images[i], image_size) for i in ids])
    return source_lib.to_model_space(x), source_lib.labels(None if labels is None else labels[ids])

  info = dict(name=f"npz:{path}", size=len(images),
              image_shape=[image_size, image_size, images.shape[-1]], value_range=[-1, 1])
  num_classes = int(labels.max()) + 1 if labels is not None else 0
  return source_lib.Source(len(images), read, num_classes, info)


def _image_files(folder):
  return sorted(os.path.join(root, f) for root, _, files in os.walk(folder) for f in files
                if f.lower().endswith(IMAGE_EXTENSIONS))


def _list_folder(path):
  """(files, labels or None, class names).

  Subfolders holding images are the classes (sorted names -> ids; files directly in
  PATH are then ignored); without them the folder is flat and unlabeled.
  """
  if not os.path.isdir(path):
    raise ConfigError(f"image folder {path} not found; check the path after 'folder:'.")
  classes = sorted(d for d in os.listdir(path) if not d.startswith(".") and
                   os.path.isdir(os.path.join(path, d)) and _image_files(os.path.join(path, d)))
  per_class = [_image_files(os.path.join(path, d)) for d in classes]
  files = [f for fs in per_class for f in fs] or sorted(
      os.path.join(path, f) for f in os.listdir(path) if f.lower().endswith(IMAGE_EXTENSIONS))
  labels = np.repeat(np.arange(len(classes)), [len(fs) for fs in per_class]) if classes else None
  if not files:
    raise ConfigError(f"image folder {path} has no images ({', '.join(IMAGE_EXTENSIONS)}), "
                     "neither directly nor in class subfolders.")
  return files, labels, classes


def _read_image(file, mode=None, size=None):
  """The file's mode (header only), or its pixels converted and resized."""
  try:
    with Image.open(file) as im:
      if mode is None:
        return im.mode
      im = im.convert(mode).resize((size, size), Image.Resampling.BILINEAR)
      return np.asarray(im).reshape(size, size, -1)
  except OSError as e:  # also truncated files, which fail only when decoded
    raise ConfigError(f"could not read image {file}: {e}. Remove or fix the file.") from e


def folder_source(path, image_size):
  """Image files, one subfolder per class or flat; greyscale if every file is."""
  files, labels, classes = _list_folder(path)
  # Headers are cheap; the pixels of unselected files are never decoded.
  mode = "L" if all(_read_image(f) in _GRAY_MODES for f in files) else "RGB"

  def read(ids):
    x = np.stack([_read_image(files[i], mode, image_size) for i in ids])
    return source_lib.to_model_space(x), source_lib.labels(None if labels is None else labels[ids])

  info = dict(name=f"folder:{path}", size=len(files), value_range=[-1, 1],
              image_shape=[image_size, image_size, 1 if mode == "L" else 3],
              **(dict(class_names=classes) if classes else {}))
  return source_lib.Source(len(files), read, len(classes), info)
