"""Reads the tensors of a TorchScript archive into numpy, without torch.

A TorchScript file is a zip: `<root>/data.pkl` pickles the module tree, each
tensor a call of torch._utils._rebuild_tensor_v2 on a persistent storage id
whose bytes lie in `<root>/data/<key>`. A restricted unpickler maps those
calls and storage classes to numpy and every scripted module class to a plain
attribute holder; any other global (os.system and the like) is refused, so a
hostile archive cannot run code here.
"""
import collections
import pickle
import zipfile

import numpy as np

# storage class -> numpy dtype; the archive's bytes are little-endian
_STORAGES = {"FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2",
             "LongStorage": "<i8", "IntStorage": "<i4", "ShortStorage": "<i2",
             "CharStorage": "i1", "ByteStorage": "u1", "BoolStorage": "?"}


class ScriptModule:
  """A scripted module's state: its attributes, and its TorchScript class name."""

  script_class = ""

  def __setstate__(self, state):
    self.__dict__.update(state)

  def children(self):
    """(name, ScriptModule) of the submodules, in the order the archive stores them."""
    return [(k, v) for k, v in self.__dict__.items() if isinstance(v, ScriptModule)]

  def tensors(self):
    return {k: v for k, v in self.__dict__.items() if isinstance(v, np.ndarray)}


class _Storage(str):
  """A storage class: only its dtype is needed."""


def _rebuild_tensor(storage, offset, size, stride, *unused):
  """torch._utils._rebuild_tensor_v2: a strided view of the storage, copied out."""
  del unused  # requires_grad, backward hooks, metadata: meaningless here
  itemsize = storage.dtype.itemsize
  view = np.lib.stride_tricks.as_strided(
      storage[offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride))
  return np.array(view)


class _Unpickler(pickle.Unpickler):

  def __init__(self, file, archive, root):
    super().__init__(file)
    self._archive, self._root, self._classes = archive, root, {}

  def find_class(self, module, name):
    if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
      return _rebuild_tensor
    if module == "torch" and name in _STORAGES:
      return _Storage(_STORAGES[name])
    if (module, name) == ("collections", "OrderedDict"):
      return collections.OrderedDict
    if (module, name) == ("torch.jit._pickle", "build_intlist"):
      return list
    if module.startswith("__torch__."):  # a scripted module: state only, no code
      key = f"{module}.{name}"
      if key not in self._classes:
        self._classes[key] = type(name, (ScriptModule,), {"script_class": key})
      return self._classes[key]
    raise pickle.UnpicklingError(f"TorchScript archive refers to {module}.{name}, which "
                                 "this reader does not allow.")

  def persistent_load(self, pid):
    kind, dtype, key, _, numel = pid  # ('storage', class, key, location, numel)
    if kind != "storage":
      raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
    raw = self._archive.read(f"{self._root}/data/{key}")
    return np.frombuffer(raw, np.dtype(dtype), count=numel)


def load(path_or_file):
  """The root ScriptModule of a TorchScript archive (a path or a binary file object)."""
  with zipfile.ZipFile(path_or_file) as archive:
    pkl = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pkl) != 1:
      raise ValueError(f"{path_or_file} is not a TorchScript archive: expected one "
                       f"<root>/data.pkl, found {pkl}.")
    root = pkl[0].split("/")[0]
    with archive.open(pkl[0]) as f:
      return _Unpickler(f, archive, root).load()


def named_modules(module, prefix=""):
  """(dotted path, ScriptModule) of `module` and all its submodules, depth first."""
  out = [(prefix, module)]
  for name, child in module.children():
    out += named_modules(child, f"{prefix}.{name}" if prefix else name)
  return out
