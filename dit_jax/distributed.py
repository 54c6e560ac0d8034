"""Joining a multi-process JAX run: jax.distributed from flags or the environment.

The same command runs on every host; JAX's multi-controller runtime makes their
devices one mesh. Nothing happens for a single process.
"""
import collections
import importlib.util
import logging
import os

import jax
import orbax.checkpoint as ocp

from dit_jax import accelerators
from dit_jax.configlib import ConfigError

log = logging.getLogger("dit_jax")


def _count(env, name):
  try:
    return int(env.get(name, "1"))
  except ValueError:
    return 1


def _launch(env):
  """How JAX should join this process to a run, from the launcher's variables:
  None (one process: nothing to join), or (launcher, initialize's keyword arguments),
  {} meaning JAX's own cluster detection. Launches JAX cannot serve are a ConfigError.

  JAX detects SLURM job steps, Open MPI (up to 4.x), Cloud TPU VMs (through the
  metadata server, so `gcloud ... tpu-vm ssh --worker=all` needs no variables) and
  its own JAX_COORDINATOR_ADDRESS; this only decides whether to ask it, and names
  the cases where asking would fail or pick the wrong answer.
  """
  if "SLURM_JOB_ID" in env and _count(env, "SLURM_NTASKS") > 1:
    if "SLURM_PROCID" not in env:  # `salloc -n4`, then a plain `python` in that shell
      raise ConfigError(
          f"this shell is inside a SLURM allocation of {env['SLURM_NTASKS']} tasks, but "
          "this process was not started by srun (no SLURM_PROCID): start one process per "
          "task with `srun python scripts/train.py ...`, or run it alone outside the "
          "allocation.")
    return "SLURM", {}
  # in a single-task SLURM job (sbatch -n1) JAX would join a 1-process run and show
  # it one GPU only (SLURM_LOCALID): not joining keeps every GPU of the node
  if _count(env, "OMPI_COMM_WORLD_SIZE") > 1 or _count(env, "PMI_SIZE") > 1:
    if "OMPI_MCA_orte_hnp_uri" in env:  # Open MPI up to 4.x: JAX reads it directly
      return "Open MPI", {}
    if importlib.util.find_spec("mpi4py") is not None:  # Open MPI 5, MPICH, Intel MPI
      return "MPI (through mpi4py)", {"cluster_detection_method": "mpi4py"}
    raise ConfigError(
        "this process was started by an MPI launcher JAX cannot read without mpi4py "
        "(Open MPI 5, MPICH or Intel MPI): pip install mpi4py, or launch with srun, or "
        "pass --coordinator, --num_processes and --process_id.")
  if "JAX_COORDINATOR_ADDRESS" in env:
    return "JAX_COORDINATOR_ADDRESS", {}
  if env.get("JAX_PLATFORMS") != "cpu" and accelerators.tpu_chips():
    return "a Cloud TPU VM", {}  # it finds its slice's peers (or that it is alone) itself
  return None


def initialize(coordinator=None, num_processes=None, process_id=None, env=None):
  """jax.distributed.initialize when this is one of several processes; -> joined.

  Explicit coordinator / num_processes / process_id (the scripts' flags, for hand
  launches) win; otherwise the launcher's environment lets JAX find them (see
  _launch); otherwise nothing. Runs before anything touches a device, so a launch
  that cannot work fails here, before any compile.
  """
  env = os.environ if env is None else env
  given = [v is not None for v in (coordinator, num_processes, process_id)]
  if any(given) and not all(given):
    raise ConfigError("--coordinator, --num_processes and --process_id go together: give "
                      "all three (or none, to let JAX read them from SLURM, Open MPI or "
                      "a Cloud TPU VM).")
  if all(given):
    if not 0 <= process_id < num_processes:
      raise ConfigError(f"--process_id={process_id} must be in [0, --num_processes="
                        f"{num_processes}).")
    launcher, kwargs = "the flags", dict(coordinator_address=coordinator,
                                         num_processes=num_processes, process_id=process_id)
  else:
    launch = _launch(env)
    if launch is None:
      return False
    launcher, kwargs = launch
  # CPU processes need a collectives library to talk (GPUs and TPUs have their own)
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    jax.distributed.initialize(**kwargs)
  except (ValueError, TypeError) as e:  # JAX found no complete description of the run
    hint = (" JAX finds a TPU slice only through its TPU backend: install it (make run "
            "ACCEL=tpu), or set JAX_PLATFORMS=cpu to run on the CPU." if "TPU" in launcher
            else "")
    raise ConfigError(
        f"JAX could not start the multi-process runtime from {launcher} ({e}).{hint} "
        "Launch with srun, mpirun or on a Cloud TPU VM slice, or give --coordinator, "
        "--num_processes and --process_id.") from e
  log.info("process %d of %d, %d local and %d global devices", jax.process_index(),
           jax.process_count(), jax.local_device_count(), jax.device_count())
  return True


# uses of each barrier or vote name so far: every process passes them in the same order
_barrier_uses = collections.Counter()


def _unique(name):
  key = f"{name}.{_barrier_uses[name]}"
  _barrier_uses[name] += 1
  return key


def all_agree(name, ok, timeout_s=600):
  """Whether `ok` holds on every process: a vote through the coordinator's key-value
  store, the same answer everywhere. Not a device collective, so a process that
  votes while another is inside one of orbax's collectives cannot pair with it; a
  process that never votes fails the others at the timeout instead of hanging them."""
  if jax.process_count() == 1:
    return bool(ok)
  client = ocp.multihost.get_jax_distributed_client()
  key = f"dit_jax/{_unique(name)}"
  client.key_value_set(f"{key}/{jax.process_index()}", "1" if ok else "0")
  votes = [client.blocking_key_value_get(f"{key}/{i}", timeout_s * 1000)
           for i in range(jax.process_count())]
  return all(v == "1" for v in votes)


def barrier(name, timeout_s=900):
  """Waits until every process gets here (the coordinator's barrier, not a device
  collective, so a host still compiling cannot time out gloo's 30-second wait).

  Orbax wants each barrier key used once, and one process passes the same point
  several times (sweep points, the control run): each use gets its own key, the
  same on every process because they all pass the same barriers in the same order.
  """
  if jax.process_count() > 1:
    ocp.multihost.get_barrier_sync_fn()(key=_unique(name), timeout_ms=timeout_s * 1000)
