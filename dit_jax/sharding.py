"""Device mesh and shardings: data parallel, with optional FSDP of the parameters."""
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA = "data"


def make_mesh(devices=None):
  devices = np.asarray(devices if devices is not None else jax.devices())
  return Mesh(devices.reshape(-1), (DATA,))


def replicated(mesh):
  return NamedSharding(mesh, P())


def batch_sharding(mesh):
  return NamedSharding(mesh, P(DATA))


def _fsdp_spec(shape, n):
  """Shards the largest axis divisible by the mesh size; small arrays replicate."""
  if n == 1 or int(np.prod(shape)) < 2 ** 12:
    return P()
  for axis in np.argsort(shape)[::-1]:
    if shape[axis] % n == 0:
      return P(*[DATA if i == axis else None for i in range(len(shape))])
  return P()


def state_shardings(abstract_state, mesh, fsdp=False):
  """Shardings for a train-state pytree of ShapeDtypeStructs."""
  n = mesh.devices.size
  def one(x):
    spec = _fsdp_spec(x.shape, n) if fsdp and len(x.shape) else P()
    return NamedSharding(mesh, spec)
  return jax.tree.map(one, abstract_state)


def shardings_of(state, mesh, fsdp=False):
  """state_shardings of an existing (or abstract) state pytree."""
  return state_shardings(jax.eval_shape(lambda: state), mesh, fsdp)


def put_batch(batch, mesh):
  """Host numpy batch -> global array sharded over the data axis.

  Each process passes its own rows; this also works on a single host.
  """
  sharding = batch_sharding(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)
