"""Images and plots written to the workdir."""
import os

import numpy as np
from PIL import Image


def to_uint8(x, value_range=(-1.0, 1.0)):
  """Model-space images to uint8; data without a fixed range is min-max scaled."""
  x = np.asarray(x, np.float32)
  lo, hi = value_range if value_range is not None else (x.min(), x.max())
  return np.clip(np.round((x - lo) / max(hi - lo, 1e-8) * 255), 0, 255).astype(np.uint8)


def save_grid(images_NHWC, path, value_range=(-1.0, 1.0), scale=None):
  """Saves N images as a near-square grid PNG, upscaled so small images are visible."""
  imgs = to_uint8(images_NHWC, value_range)
  n, h, w, c = imgs.shape
  cols = int(np.ceil(np.sqrt(n)))
  rows = int(np.ceil(n / cols))
  grid = np.zeros((rows * (h + 1) + 1, cols * (w + 1) + 1, c), np.uint8)
  for i in range(n):
    r, q = divmod(i, cols)
    grid[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + q * (w + 1):1 + q * (w + 1) + w] = imgs[i]
  scale = scale or max(1, 256 // max(grid.shape[:2]))
  img = Image.fromarray(grid[..., 0] if c == 1 else grid)
  img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  img.save(path)
  return path
