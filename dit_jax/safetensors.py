"""Reads a .safetensors file into numpy arrays, without the safetensors package.

The format: 8 bytes of little-endian header length, a JSON header mapping each
tensor name to its dtype, shape and [begin, end) byte offsets into the buffer
that follows, and an optional "__metadata__" entry of strings. Nothing in it is
executable, so reading it needs no restriction beyond checking the offsets.
"""
import json
import os
import struct

import ml_dtypes
import numpy as np

from dit_jax.configlib import ConfigError

_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": ml_dtypes.bfloat16,
           "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}
_MAX_HEADER = 100 * 2 ** 20  # the format's own limit on the JSON header


def _header(f, path):
  """(header dict, its length in bytes) of an open file."""
  head = f.read(8)
  file_size = os.fstat(f.fileno()).st_size
  if len(head) < 8:
    raise ConfigError(f"{path} is too short to be a .safetensors file.")
  (size,) = struct.unpack("<Q", head)
  if size > min(_MAX_HEADER, file_size - 8):
    raise ConfigError(f"{path} is not a .safetensors file (header length {size}).")
  try:
    return json.loads(f.read(size)), size
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ConfigError(f"{path} is not a .safetensors file: its header is not JSON ({e}).") from e


def _open(path):
  if not os.path.isfile(path):
    raise ConfigError(f"{path} is not a file: give a diffusers .safetensors weights file.")
  return open(path, "rb")


def shapes(path):
  """{name: shape} of a file's tensors, reading its header only."""
  with _open(path) as f:
    header, _ = _header(f, path)
  return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}


def names(path):
  return list(shapes(path))


def load(path):
  """{name: array} of every tensor in the file (copies, safe to keep after closing)."""
  with _open(path) as f:
    header, _ = _header(f, path)
    body = memoryview(f.read())
  out = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    if info["dtype"] not in _DTYPES:
      raise ConfigError(f"{path}: tensor {name} has dtype {info['dtype']}, which this "
                       f"reader does not read ({sorted(_DTYPES)}).")
    dtype = np.dtype(_DTYPES[info["dtype"]])
    begin, end = info["data_offsets"]
    count = int(np.prod(info["shape"], dtype=np.int64))
    if not 0 <= begin <= end <= len(body) or end - begin != count * dtype.itemsize:
      raise ConfigError(f"{path}: tensor {name}'s offsets {begin}..{end} do not fit its "
                       f"shape {info['shape']} or the file; the file is damaged.")
    out[name] = np.frombuffer(body[begin:end], dtype).reshape(info["shape"]).copy()
  return out
