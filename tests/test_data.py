"""Tests of dit_jax.data and the TFDS builders; everything is built in tmp dirs, offline."""
import io
import json
import os
import sys

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

from dit_jax import configlib, data, datasets
from dit_jax.datasets import tfds_sources


def make_cfg(name="digits", data_dir=None, gmm=None, **overrides):
  """config.data as the trainer passes it: the base config's, with overrides."""
  fields = configlib.base_config().data.to_dict()
  fields.update(name=name, n_train=32, n_select=24, n_test=40, data_dir=data_dir)
  fields["gmm"].update(gmm or {})
  return ml_collections.ConfigDict(dict(fields, **overrides))  # any type: checks must catch it


def to_model(images):
  return images.astype(np.float32) / 127.5 - 1


@pytest.fixture(scope="module")
def tfds_dir(data_dir):
  """conftest's session data_dir, with digits prepared."""
  tfds_sources.prepare("digits", data_dir)
  return data_dir


# ---------------------------------------------------------------- digits


def test_digits_builder_round_trip(tfds_dir):
  source = tfds.data_source("digits", split="train", data_dir=tfds_dir)
  assert len(source) == 1797
  records = source.__getitems__(list(range(1797)))
  images = np.stack([r["image"] for r in records])
  labels = np.array([r["label"] for r in records])
  assert images.dtype == np.uint8 and images.shape == (1797, 8, 8, 1)
  assert images.min() == 0 and images.max() == 255
  assert set(labels) == set(range(10))
  order = np.argsort([r["index"] for r in records])
  want_images, want_labels = datasets.digits.digit_images()
  np.testing.assert_array_equal(images[order], want_images)
  np.testing.assert_array_equal(labels[order], want_labels)


def test_crops_are_seeded_rgb_crops_of_both_photos():
  images, labels = datasets.crops.crop_images(size=40)
  again, _ = datasets.crops.crop_images(size=40)
  assert images.shape == (40, 32, 32, 3) and images.dtype == np.uint8
  np.testing.assert_array_equal(images, again)
  assert set(labels) == {0, 1} and images.std() > 20  # both photos, not blank


def test_prepare_is_idempotent(tfds_dir, monkeypatch):
  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare",
                      lambda *a, **k: pytest.fail("rebuilt a prepared dataset"))
  assert tfds_sources.prepare("digits", tfds_dir).is_prepared()


def test_load_digits(tfds_dir):
  ds = data.load(make_cfg(data_dir=tfds_dir), seed=0)
  assert ds.train_x.shape == (32, 8, 8, 1)
  assert ds.select_x.shape == (24, 8, 8, 1) and ds.test_x.shape == (40, 8, 8, 1)
  assert ds.train_x.dtype == np.float32
  assert ds.train_x.min() >= -1 and ds.train_x.max() <= 1 and ds.train_x.max() == 1
  assert ds.train_y.dtype == np.int32 and ds.train_y.shape == (32,)
  assert ds.num_classes == 10
  assert ds.info == dict(name="digits", size=1797, image_shape=[8, 8, 1],
                         value_range=[-1, 1], num_classes=10)
  json.dumps(ds.info)
  assert "tensorflow" not in sys.modules


def test_splits_are_disjoint_seeded_and_recorded(tfds_dir):
  ds = data.load(make_cfg(data_dir=tfds_dir), seed=0)
  ids = [set(ds.train_index), set(ds.select_index), set(ds.test_index)]
  assert [len(i) for i in ids] == [32, 24, 40]
  assert not ids[0] & ids[1] and not ids[0] & ids[2] and not ids[1] & ids[2]
  # Rows are the records they claim to be, and no image is in two splits.
  source = tfds.data_source("digits", split="train", data_dir=tfds_dir)
  first = source[int(ds.train_index[0])]
  np.testing.assert_array_equal(ds.train_x[0], to_model(first["image"]))
  np.testing.assert_array_equal(ds.test_y, [source[int(i)]["label"] for i in ds.test_index])
  rows = [{row.tobytes() for row in x} for x in (ds.train_x, ds.select_x, ds.test_x)]
  assert not rows[0] & rows[1] and not rows[0] & rows[2] and not rows[1] & rows[2]
  splits = ds.splits()
  assert {k: v["size"] for k, v in splits.items()} == {"train": 32, "select": 24, "test": 40}
  assert splits["test"]["fingerprint"] == data.fingerprint(ds.test_index)
  assert len({v["fingerprint"] for v in splits.values()}) == 3
  again = data.load(make_cfg(data_dir=tfds_dir), seed=0)
  np.testing.assert_array_equal(again.train_x, ds.train_x)
  assert again.splits() == splits
  other = data.load(make_cfg(data_dir=tfds_dir), seed=1)
  assert set(other.train_index) != set(ds.train_index)
  assert other.splits()["train"]["fingerprint"] != splits["train"]["fingerprint"]


def test_select_and_test_fixed_across_n_train_and_train_sets_nest(tfds_dir):
  small = data.load(make_cfg(data_dir=tfds_dir, n_train=8), seed=3)
  big = data.load(make_cfg(data_dir=tfds_dir, n_train=64), seed=3)
  np.testing.assert_array_equal(small.select_index, big.select_index)
  np.testing.assert_array_equal(small.test_index, big.test_index)
  np.testing.assert_array_equal(small.train_index, big.train_index[:8])


def test_select_and_test_shrink_then_error(tfds_dir):
  ds = data.load(make_cfg(data_dir=tfds_dir, n_train=1787, n_select=20, n_test=30), seed=0)
  assert (len(ds.select_x), len(ds.test_x)) == (4, 6)  # 10 left, shared 20:30
  assert not set(ds.train_index) & (set(ds.select_index) | set(ds.test_index))
  for n_train in (1796, 2000):
    with pytest.raises(ValueError, match=rf"n_train={n_train} leaves too few of the 1797"):
      data.load(make_cfg(data_dir=tfds_dir, n_train=n_train), seed=0)
  for n_train in (9, 12):  # the same rule for sources of any size
    with pytest.raises(ValueError, match=r"config\.data\.n_train=.*at most 8"):
      data.split_indices(0, size=10, n_train=n_train, n_select=5, n_test=5)
  train, select, test = data.split_indices(0, size=10, n_train=8, n_select=5, n_test=5)
  assert (len(train), len(select), len(test)) == (8, 1, 1)


# ---------------------------------------------------------------- gmm


def _read_all(builder):
  records = builder.as_data_source(split="train")
  records = records.__getitems__(list(range(len(records))))
  x = np.stack([r["image"] for r in records]).reshape(len(records), -1)
  return x, np.array([r["label"] for r in records])


def test_gmm_builder_round_trip(tmp_path):
  variances = [0.25, 1.0, 4.0, 9.0]
  config = datasets.gmm_config(k=3, shape=(2, 2, 1), scale=3.0, cov_diag=variances,
                               size=3000, data_seed=5)
  builder = tfds_sources.prepare("gmm", str(tmp_path), config)
  means, cov_diag = datasets.mixture_params(config)
  with open(os.path.join(builder.data_dir, "metadata.json")) as f:
    stored = json.load(f)
  np.testing.assert_array_equal(stored["means"], means)
  np.testing.assert_array_equal(stored["cov_diag"], variances)
  assert stored["weights"] == [1 / 3] * 3
  x, labels = _read_all(builder)
  assert x.dtype == np.float32 and set(labels) == {0, 1, 2}
  for comp in range(3):
    in_comp = x[labels == comp]
    np.testing.assert_allclose(in_comp.mean(0), means[comp], atol=0.3)
    np.testing.assert_allclose(in_comp.var(0), variances, rtol=0.2)


def test_gmm_configs_do_not_collide(tmp_path):
  a = datasets.gmm_config(k=2, shape=(2, 2, 1), size=200)
  b = datasets.gmm_config(k=3, shape=(2, 2, 1), size=200)
  c = datasets.gmm_config(k=2, shape=(2, 2, 1), size=200, cov_diag=[1, 1, 1, 2])
  d = datasets.gmm_config(k=2, shape=(2, 2, 1), size=200, cov_scale=0.5)
  assert len({a.name, b.name, c.name, d.name}) == 4
  built_a = tfds_sources.prepare("gmm", str(tmp_path), a)
  built_b = tfds_sources.prepare("gmm", str(tmp_path), b)
  assert built_a.data_dir != built_b.data_dir
  assert set(_read_all(built_a)[1]) == {0, 1} and set(_read_all(built_b)[1]) == {0, 1, 2}


def test_load_gmm(tmp_path):
  gmm = dict(k=4, scale=2.0, cov_scale=0.5, cov_diag=None, size=500, data_seed=1)
  cfg = make_cfg("gmm", str(tmp_path), image_size=2, channels=3, gmm=gmm)
  ds = data.load(cfg, seed=0)
  assert ds.train_x.shape == (32, 2, 2, 3) and ds.test_x.shape == (40, 2, 2, 3)
  assert ds.train_y is None and ds.num_classes == 0
  info = ds.info
  assert info["value_range"] is None and info["size"] == 500
  assert np.shape(info["gmm"]["means"]) == (4, 12)
  assert info["gmm"]["cov_diag"] == [0.25] * 12 and info["gmm"]["weights"] == [0.25] * 4
  json.dumps(info)
  cfg.conditional = True
  cond = data.load(cfg, seed=0)
  assert cond.num_classes == 4 and cond.train_y.shape == (32,)
  np.testing.assert_array_equal(cond.train_x, ds.train_x)


# ---------------------------------------------------------------- batch_indices


def test_batch_indices_is_pure():
  a = data.batch_indices(seed=3, step=17, n=50, batch_size=8)
  data._epoch_permutation.cache_clear()
  np.testing.assert_array_equal(a, data.batch_indices(3, 17, 50, 8))
  assert not np.array_equal(a, data.batch_indices(4, 17, 50, 8))


def test_batch_indices_epochs_visit_every_index_once():
  n, batch = 48, 8
  for epoch in range(3):
    steps = range(epoch * n // batch, (epoch + 1) * n // batch)
    seen = np.concatenate([data.batch_indices(0, s, n, batch) for s in steps])
    assert sorted(seen) == list(range(n))
  assert not np.array_equal(data.batch_indices(0, 0, n, batch),
                            data.batch_indices(0, n // batch, n, batch))


def test_batch_indices_batch_larger_than_n():
  out = data.batch_indices(seed=0, step=2, n=5, batch_size=12)
  assert out.shape == (12,) and out.min() >= 0 and out.max() < 5
  stream = np.concatenate([data.batch_indices(0, s, 5, 12) for s in range(3)])
  for epoch in range(7):  # 36 draws = 7 whole epochs + 1
    assert sorted(stream[5 * epoch:5 * epoch + 5]) == list(range(5))


# ---------------------------------------------------------------- npz


def test_npz_round_trip(tmp_path):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (100, 8, 8), dtype=np.uint8)
  labels = np.arange(100) % 4
  path = tmp_path / "d.npz"
  np.savez(path, images=images, labels=labels)
  ds = data.load(make_cfg(f"npz:{path}", n_train=10, n_select=10, n_test=10), seed=0)
  assert ds.train_x.shape == (10, 8, 8, 1) and ds.num_classes == 4
  np.testing.assert_array_equal(ds.train_x[..., 0], to_model(images[ds.train_index]))
  np.testing.assert_array_equal(ds.test_y, labels[ds.test_index])
  resized = data.load(make_cfg(f"npz:{path}", n_train=10, n_select=10, n_test=10, image_size=4), 0)
  assert resized.train_x.shape == (10, 4, 4, 1)
  np.savez(path, images=images[..., None].repeat(3, -1))
  rgb = data.load(make_cfg(f"npz:{path}", n_train=10, n_select=10, n_test=10), seed=0)
  assert rgb.train_x.shape == (10, 8, 8, 3) and rgb.train_y is None and rgb.num_classes == 0


BAD_NPZ = {
    "missing key 'images'": dict(pixels=np.zeros((4, 8, 8), np.uint8)),
    "not uint8": dict(images=np.zeros((4, 8, 8), np.float32)),
    "is empty": dict(images=np.zeros((0, 8, 8), np.uint8)),
    "does not match 4 images": dict(images=np.zeros((4, 8, 8), np.uint8),
                                    labels=np.arange(3)),
    "has 2 channels": dict(images=np.zeros((4, 8, 8, 2), np.uint8)),
    "has shape": dict(images=np.zeros((4, 8), np.uint8)),
}


@pytest.mark.parametrize("phrase", sorted(BAD_NPZ))
def test_npz_errors(tmp_path, phrase):
  path = tmp_path / "bad.npz"
  np.savez(path, **BAD_NPZ[phrase])
  with pytest.raises(ValueError, match=phrase) as e:
    data.load(make_cfg(f"npz:{path}", n_train=1, n_select=1, n_test=1), seed=0)
  assert str(path) in str(e.value)


def test_npz_missing_file(tmp_path):
  with pytest.raises(ValueError, match="file not found"):
    data.load(make_cfg(f"npz:{tmp_path}/nope.npz"), seed=0)


# ---------------------------------------------------------------- folder


def _write_png(path, size=(10, 6), mode="RGB", value=0):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.new(mode, size, value if mode == "L" else (value, 255 - value, 0)).save(path)


def test_folder_flat(tmp_path):
  for i in range(6):
    _write_png(tmp_path / f"img{i}.PNG", value=40 * i)
  (tmp_path / "notes.txt").write_text("not an image")
  ds = data.load(make_cfg(f"folder:{tmp_path}", n_train=4, n_select=1, n_test=1, image_size=5), 0)
  assert ds.train_x.shape == (4, 5, 5, 3) and ds.test_x.shape == (1, 5, 5, 3)
  assert ds.train_y is None and ds.num_classes == 0 and ds.info["size"] == 6
  everything = np.concatenate([ds.train_x, ds.select_x, ds.test_x])
  assert everything.min() == -1 and everything.max() == 1  # blue 0, green 255 - 0


def test_folder_classes_grayscale(tmp_path):
  for cls, value in (("cat", 0), ("dog", 255)):
    for i in range(3):
      _write_png(tmp_path / cls / f"{i}.jpg", mode="L", value=value)
  ds = data.load(make_cfg(f"folder:{tmp_path}", n_train=4, n_select=1, n_test=1), seed=0)
  assert ds.train_x.shape == (4, 8, 8, 1) and ds.num_classes == 2
  assert ds.info["class_names"] == ["cat", "dog"]
  # label 0 (cat) images are black, label 1 (dog) white.
  np.testing.assert_array_equal(ds.train_x.mean((1, 2, 3)), 2.0 * ds.train_y - 1)


def test_folder_errors(tmp_path):
  with pytest.raises(ValueError, match="not found"):
    data.load(make_cfg(f"folder:{tmp_path}/missing"), seed=0)
  with pytest.raises(ValueError, match="has no images"):
    data.load(make_cfg(f"folder:{tmp_path}"), seed=0)
  _write_png(tmp_path / "good.png")
  (tmp_path / "broken.png").write_bytes(b"not a png")
  with pytest.raises(ValueError, match="broken.png"):
    data.load(make_cfg(f"folder:{tmp_path}", n_train=1, n_select=1, n_test=1), seed=0)


# ---------------------------------------------------------------- other TFDS datasets


class DitJaxTestImages(tfds.core.GeneratorBasedBuilder):
  """A tiny RGB dataset standing in for cifar10 and friends."""
  VERSION = tfds.core.Version("1.0.0")

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    return epath.Path(__file__)

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        # PNG-encoded like cifar10; bytes in, so encoding needs no TensorFlow.
        "image": tfds.features.Image(shape=(6, 6, 3)),
        "label": tfds.features.ClassLabel(num_classes=5)}))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    for i in range(40):
      png = io.BytesIO()
      Image.new("RGB", (6, 6), (6 * i,) * 3).save(png, format="PNG")
      yield i, {"image": png.getvalue(), "label": i % 5}


def test_prepared_tfds_dataset(tmp_path):
  DitJaxTestImages(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
  cfg = make_cfg("dit_jax_test_images", str(tmp_path), n_train=8, n_select=2, n_test=2, image_size=3)
  ds = data.load(cfg, seed=0)
  assert ds.train_x.shape == (8, 3, 3, 3) and ds.num_classes == 5
  # Storage order differs from generation order: the pixel value tells the example id.
  ids = np.round((ds.train_x[:, 0, 0, 0] + 1) * 127.5 / 6).astype(int)
  np.testing.assert_array_equal(ds.train_y, ids % 5)
  assert len(set(ids)) == 8
  assert ds.info["size"] == 40 and ds.info["image_shape"] == [3, 3, 3]


def test_unknown_name():
  with pytest.raises(ValueError, match=r"config.data.name='no_such_set'.*digits, crops, gmm, npz:"):
    data.load(make_cfg("no_such_set"), seed=0)
  with pytest.raises(ValueError, match="config.data.name='zip:x.zip'"):
    data.check_config(make_cfg("zip:x.zip"))


def test_unprepared_tfds_dataset_never_downloads(tmp_path, monkeypatch):
  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare",
                      lambda *a, **k: pytest.fail("tried to download"))
  data.check_config(make_cfg("mnist", str(tmp_path)))  # registered: passes the cheap check
  with pytest.raises(ValueError) as e:
    data.load(make_cfg("mnist", str(tmp_path)), seed=0)
  assert f"tfds build mnist --file_format=array_record --data_dir={tmp_path}" in str(e.value)
  assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- check_config


@pytest.mark.parametrize("overrides, phrase", [
    (dict(n_train=0), "config.data.n_train must be a positive integer, got 0"),
    (dict(n_train=-3), "config.data.n_train must be a positive integer"),
    (dict(n_train=2.5), "config.data.n_train must be a positive integer"),
    (dict(n_select=0), "config.data.n_select"),
    (dict(n_test=0), "config.data.n_test"),
    (dict(image_size=0), "config.data.image_size"),
    (dict(image_size=16), "digits is 8x8"),
    (dict(n_train=1797), "config.data.n_train=1797 leaves too few of the 1797 digits"),
    (dict(name=""), "config.data.name must be a non-empty string"),
    (dict(name="npz:"), "lacks a path"),
    (dict(name="gmm", gmm=dict(k=0)), "config.data.gmm.k"),
    (dict(name="gmm", gmm=dict(scale=0.0)), "config.data.gmm.scale"),
    (dict(name="gmm", gmm=dict(data_seed=-1)), "config.data.gmm.data_seed must be an integer >= 0"),
    (dict(name="gmm", gmm=dict(size=32)), "config.data.gmm.size=32 must exceed"),
    (dict(name="gmm", channels=0), "config.data.channels"),
    (dict(name="gmm", gmm=dict(cov_diag=[1.0, 2.0])), "config.data.gmm.cov_diag"),
])
def test_check_config_rejects(overrides, phrase):
  cfg = make_cfg(**overrides)
  with pytest.raises(ValueError, match=phrase.replace(".", r"\.")):
    data.check_config(cfg)


def test_check_config_accepts_the_base_config():
  data.check_config(configlib.base_config().data)
  data.check_config(make_cfg())


def test_gmm_weights_are_a_config_field(tmp_path):
  from dit_jax import memorization
  weights = (0.7, 0.1, 0.1, 0.1)
  gmm = dict(k=4, size=4000, weights=weights)
  cfg = make_cfg("gmm", str(tmp_path), image_size=2, gmm=gmm, n_train=2000, n_select=1000,
                 n_test=1000, conditional=True)  # labels: the component of each sample
  ds = data.load(cfg, seed=0)
  assert ds.info["gmm"]["weights"] == list(weights)
  np.testing.assert_allclose(memorization.gmm_params(ds.info)[2], weights, rtol=1e-6)
  comp = np.concatenate([ds.train_y, ds.select_y, ds.test_y])
  np.testing.assert_allclose(np.bincount(comp, minlength=4) / 4000, weights, atol=0.025)
  uniform = data.load(make_cfg("gmm", str(tmp_path), image_size=2, gmm=dict(k=4, size=500)), 0)
  assert uniform.info["gmm"]["weights"] == [0.25] * 4
  with pytest.raises(ValueError, match=r"config\.data\.gmm\.weights must be 4 positive"):
    data.check_config(make_cfg("gmm", image_size=2, gmm=dict(k=4, weights=(0.5, 0.5))))
