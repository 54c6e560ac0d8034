"""Device mesh and shardings: batches over ("data", "fsdp"), parameters over "fsdp".

The mesh is config.mesh.data x config.mesh.fsdp devices (-1: the rest), laid
out by jax.make_mesh, which orders the devices of all processes for the
interconnect. Every batch (training, sampling, probes, importance) is split
over both axes; with fsdp > 1 each parameter and its optimizer state are split
over "fsdp" along their largest divisible axis.
"""
import math

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from dit_jax.configlib import ConfigError, check_int

DATA, FSDP = "data", "fsdp"
BATCH = (DATA, FSDP)  # batches are split over every device


def mesh_shape(mesh_cfg, num_devices):
  """(data, fsdp) device counts; one of them may be -1: whatever the other leaves."""
  data, fsdp = mesh_cfg.data, mesh_cfg.fsdp
  for field, value in (("mesh.data", data), ("mesh.fsdp", fsdp)):
    if value != -1:
      check_int(value, field)
  if data == -1 and fsdp == -1:
    raise ConfigError("config.mesh.data and config.mesh.fsdp are both -1; give one of them.")
  if data == -1 or fsdp == -1:
    known = fsdp if data == -1 else data
    if num_devices % known:
      raise ConfigError(f"config.mesh needs a multiple of {known} devices, but there are "
                        f"{num_devices}; change config.mesh.data / config.mesh.fsdp.")
    data, fsdp = (num_devices // known, fsdp) if data == -1 else (data, num_devices // known)
  if data * fsdp != num_devices:
    raise ConfigError(f"config.mesh.data x config.mesh.fsdp = {data} x {fsdp} must be the "
                      f"{num_devices} devices of the run; set one of them to -1.")
  return data, fsdp


def make_mesh(mesh_cfg=None, devices=None):
  """The run's mesh; without a config, every device on the data axis."""
  devices = list(devices if devices is not None else jax.devices())
  shape = mesh_shape(mesh_cfg, len(devices)) if mesh_cfg is not None else (len(devices), 1)
  return jax.make_mesh(shape, (DATA, FSDP), axis_types=(AxisType.Auto,) * 2, devices=devices)


def batch_devices(mesh):
  return math.prod(mesh.shape[a] for a in BATCH)


def replicated(mesh):
  return NamedSharding(mesh, P())


def batch_sharding(mesh):
  return NamedSharding(mesh, P(BATCH))


def _fsdp_spec(shape, n):
  """Shards the largest axis divisible by n; small arrays replicate."""
  if n == 1 or not shape or int(np.prod(shape)) < 2 ** 12:
    return P()
  for axis in np.argsort(shape)[::-1]:
    if shape[axis] % n == 0:
      return P(*[FSDP if i == axis else None for i in range(len(shape))])
  return P()


def state_shardings(abstract_state, mesh):
  """Shardings for a train-state pytree of ShapeDtypeStructs (FSDP over "fsdp")."""
  n = mesh.shape[FSDP]
  return jax.tree.map(lambda x: NamedSharding(mesh, _fsdp_spec(x.shape, n)), abstract_state)


def shardings_of(state, mesh):
  """state_shardings of an existing (or abstract) state pytree."""
  return state_shardings(jax.eval_shape(lambda: state), mesh)


def put_batch(batch, mesh):
  """Host numpy batch -> global array split over every device.

  Each process passes its own rows (process_rows); this also works on a single host.
  """
  sharding = batch_sharding(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)


def process_slice(mesh, global_rows):
  """The rows of a global batch that this process's devices hold, as a slice.

  Read off the sharding, so it holds for any device order the mesh chose; a
  process materialises only these rows of each batch.
  """
  index_map = batch_sharding(mesh).addressable_devices_indices_map((global_rows,))
  bounds = sorted((s[0].start or 0, global_rows if s[0].stop is None else s[0].stop)
                  for s in index_map.values())
  if any(a[1] != b[0] for a, b in zip(bounds, bounds[1:])):
    raise ValueError(f"this process's rows of the batch are not contiguous: {bounds}")
  return slice(bounds[0][0], bounds[-1][1])


def pad_to(n, mesh):
  """The least multiple of the mesh's batch devices >= n (batches split evenly)."""
  k = batch_devices(mesh)
  return -(-n // k) * k


def gather(x):
  """A global array (or a pytree of them) as host numpy arrays on every process."""
  def one(a):
    if not isinstance(a, jax.Array) or a.is_fully_addressable or a.is_fully_replicated:
      return np.asarray(a)
    return np.asarray(multihost_utils.process_allgather(a, tiled=True))
  return jax.tree.map(one, x)


def put_global(x, mesh):
  """A host array that every process holds whole -> split over the batch axes
  (replicated when its rows do not divide evenly over the devices)."""
  x = np.asarray(x)
  spec = P(BATCH) if x.ndim and len(x) % batch_devices(mesh) == 0 else P()
  return jax.make_array_from_callback(x.shape, NamedSharding(mesh, spec), lambda i: x[i])
