"""scikit-learn's 8x8 digits (1797 images) as a TFDS dataset; the data ships with sklearn."""
import numpy as np
import tensorflow_datasets as tfds

from dit_jax.datasets import local

SIZE = 1797  # images in load_digits


def digit_images():
  """(1797, 8, 8, 1) uint8 in 0..255 and (1797,) int labels, in sklearn order."""
  from sklearn import datasets  # deferred: sklearn is slow to import and only needed to build
  digits = datasets.load_digits()
  # Raw values are 0..16; rounding maps 16 to exactly 255.
  images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
  return images[..., None], digits.target.astype(np.int64)


class Digits(local.LocalBuilder):
  """One 'train' split with all 1797 images; 'index' is the position in sklearn's order."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}

  def _info(self):
    # DatasetInfo directly: dataset_info_from_configs needs a TFDS package directory.
    return tfds.core.DatasetInfo(
        builder=self,
        description="scikit-learn load_digits, 8x8 grayscale, scaled 0..16 -> 0..255.",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
            "label": tfds.features.ClassLabel(num_classes=10),
            "index": tfds.features.Scalar(dtype=np.int64),
        }),
        supervised_keys=("image", "label"),
    )

  def _generate_examples(self):
    images, labels = digit_images()
    for i, (image, label) in enumerate(zip(images, labels)):
      yield i, {"image": image, "label": int(label), "index": i}
