"""32x32 RGB crops of scikit-learn's two sample photos as a TFDS dataset (offline).

The project's RGB dataset for testing the 3-channel path end to end, Inception
FID included, where CIFAR-10 cannot be fetched. load_sample_images() ships
china.jpg and flower.jpg (427x640 each); every record is a square of random side
32..128 px at a random place in one of them, resized to 32x32 (PIL bilinear,
antialiased). Seeded, so every build holds the same images.
"""
import numpy as np
import tensorflow_datasets as tfds

from dit_jax.datasets import local
from PIL import Image

SIZE = 5000  # records: enough for two disjoint 1,000-image FID sets and a training split
SIDE = 32  # output side in pixels
MIN_CROP, MAX_CROP = 32, 128  # crop sides in source pixels
SEED = 0
PHOTOS = ("china", "flower")


def crop_images(size=SIZE, seed=SEED):
  """(size, 32, 32, 3) uint8 crops and (size,) int64 labels (0 china, 1 flower)."""
  from sklearn import datasets  # deferred: sklearn is slow to import and only needed to build
  photos = datasets.load_sample_images().images
  rng = np.random.default_rng(seed)
  labels = rng.integers(len(photos), size=size)
  out = np.empty((size, SIDE, SIDE, 3), np.uint8)
  for i, label in enumerate(labels):
    photo = photos[label]
    side = int(rng.integers(MIN_CROP, MAX_CROP + 1))
    top = int(rng.integers(photo.shape[0] - side + 1))
    left = int(rng.integers(photo.shape[1] - side + 1))
    patch = Image.fromarray(photo[top:top + side, left:left + side])
    out[i] = np.asarray(patch.resize((SIDE, SIDE), Image.Resampling.BILINEAR))
  return out, labels.astype(np.int64)


class Crops(local.LocalBuilder):
  """One 'train' split of SIZE crops; 'index' is the position in crop_images() order."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}

  def _info(self):
    # DatasetInfo directly: dataset_info_from_configs needs a TFDS package directory.
    return tfds.core.DatasetInfo(
        builder=self,
        description="Random square crops of scikit-learn's china.jpg and flower.jpg, "
                    "resized to 32x32 RGB; label: which photo.",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(SIDE, SIDE, 3), dtype=np.uint8),
            "label": tfds.features.ClassLabel(names=list(PHOTOS)),
            "index": tfds.features.Scalar(dtype=np.int64),
        }),
        supervised_keys=("image", "label"),
    )

  def _generate_examples(self):
    images, labels = crop_images()
    for i, (image, label) in enumerate(zip(images, labels)):
      yield i, {"image": image, "label": int(label), "index": i}
