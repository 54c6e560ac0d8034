"""Joining a multi-process JAX run: jax.distributed from flags or the environment.

The same command runs on every host; JAX's multi-controller runtime makes their
devices one mesh. Nothing happens for a single process.
"""
import logging
import os

import jax
import orbax.checkpoint as ocp

from dit_jax.configlib import ConfigError

log = logging.getLogger("dit_jax")


def _cluster_environment():
  """Whether the environment describes several processes JAX can find by itself:
  a SLURM job step with more than one task, a multi-host TPU slice, or JAX's own
  coordinator variables."""
  if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in os.environ:
    return True
  if len(os.environ.get("TPU_WORKER_HOSTNAMES", "").split(",")) > 1:
    return True
  return "JAX_COORDINATOR_ADDRESS" in os.environ


def initialize(coordinator=None, num_processes=None, process_id=None):
  """jax.distributed.initialize when this is one of several processes; -> joined.

  Explicit coordinator / num_processes / process_id (e.g. the scripts' flags)
  win; otherwise a cluster environment lets JAX find them; otherwise nothing.
  """
  given = [v is not None for v in (coordinator, num_processes, process_id)]
  if any(given) and not all(given):
    raise ConfigError("--coordinator, --num_processes and --process_id go together: give "
                      "all three (or none, to read them from SLURM / TPU / JAX_* variables).")
  if not any(given) and not _cluster_environment():
    return False
  if any(given) and not 0 <= process_id < num_processes:
    raise ConfigError(f"--process_id={process_id} must be in [0, --num_processes="
                      f"{num_processes}).")
  # CPU processes need a collectives library to talk (GPUs and TPUs have their own)
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                             process_id=process_id)
  log.info("process %d of %d, %d local and %d global devices", jax.process_index(),
           jax.process_count(), jax.local_device_count(), jax.device_count())
  return True


def barrier(name, timeout_s=900):
  """Waits until every process gets here (the coordinator's barrier, not a device
  collective, so a host still compiling cannot time out gloo's 30-second wait)."""
  if jax.process_count() > 1:
    ocp.multihost.get_barrier_sync_fn()(key=name, timeout_ms=timeout_s * 1000)
