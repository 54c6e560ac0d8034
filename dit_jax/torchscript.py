"""Reads the tensors of a torch zip archive into numpy, without torch.

Both a TorchScript file and a `torch.save` checkpoint (the format since torch 1.6)
are a zip: `<root>/data.pkl` pickles the module tree or the saved object, each
tensor a call of torch._utils._rebuild_tensor_v2 on a persistent storage id
whose bytes lie in `<root>/data/<key>`. A restricted unpickler maps those
calls and storage classes to numpy, every scripted module class and argparse's
Namespace (training scripts save their flags with the weights) to a plain
attribute holder; any other global (os.system and the like) is refused, so a
hostile archive cannot run code here.
"""
import collections
import pickle
import zipfile

import ml_dtypes
import numpy as np

# storage class -> numpy dtype; the archive's bytes are little-endian
_STORAGES = {"FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2",
             "LongStorage": "<i8", "IntStorage": "<i4", "ShortStorage": "<i2",
             "CharStorage": "i1", "ByteStorage": "u1", "BoolStorage": "?",
             "BFloat16Storage": np.dtype(ml_dtypes.bfloat16)}


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


class Namespace:
  """argparse.Namespace's state, e.g. the flags a training script saved beside its weights."""

  def __setstate__(self, state):
    self.__dict__.update(state)


class _Storage:
  """A storage class: only its dtype is needed."""

  def __init__(self, dtype):
    self.dtype = np.dtype(dtype)


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
    if (module, name) == ("argparse", "Namespace"):
      return Namespace
    if (module, name) == ("collections", "OrderedDict"):
      return collections.OrderedDict
    if (module, name) == ("torch.jit._pickle", "build_intlist"):
      return list
    if module.startswith("__torch__."):  # a scripted module: state only, no code
      key = f"{module}.{name}"
      if key not in self._classes:
        self._classes[key] = type(name, (ScriptModule,), {"script_class": key})
      return self._classes[key]
    raise pickle.UnpicklingError(f"the torch archive refers to {module}.{name}, which "
                                 "this reader does not allow.")

  def persistent_load(self, pid):
    kind, storage, key, _, numel = pid  # ('storage', class, key, location, numel)
    if kind != "storage":
      raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
    raw = self._archive.read(f"{self._root}/data/{key}")
    return np.frombuffer(raw, storage.dtype, count=numel)


def load(path_or_file):
  """The unpickled root of a torch zip archive (a path or a binary file object): a
  ScriptModule for TorchScript, the saved object (often a dict of arrays) for torch.save."""
  if not zipfile.is_zipfile(path_or_file):
    raise ValueError(f"{path_or_file} is not a torch zip archive: files saved by torch "
                     "before 1.6 use a legacy format this reader does not read; load and "
                     "save it again with torch >= 1.6 (torch.save(torch.load(f), f)).")
  with zipfile.ZipFile(path_or_file) as archive:
    pkl = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pkl) != 1:
      raise ValueError(f"{path_or_file} is not a torch archive: expected one "
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
