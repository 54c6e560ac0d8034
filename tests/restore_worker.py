"""One process of a two-process run that saves steps 10 and 20, then resumes from its
checkpoints while process DAMAGED (or none: -1) cannot read step 20, as a host
whose NFS has not shown it the commit marker yet. Used by tests/test_multihost.py.

  python tests/restore_worker.py PORT PROCESS_ID DIRECTORY DAMAGED
Prints one line: RESULT {"step": ..., "value": ..., "listing": [...]}.
"""
import json
import os
import sys

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dit_jax import checkpointing, distributed, sharding  # pylint: disable=wrong-import-position


def main(port, process_id, directory, damaged):
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(f"127.0.0.1:{port}", 2, process_id)
  mesh = sharding.make_mesh()  # one device per process, both on the data axis
  spec = NamedSharding(mesh, P(sharding.DATA))
  make = lambda v: jax.make_array_from_callback(
      (4, 3), spec, lambda index: np.full((4, 3), v, np.float32)[index])
  ckpt = checkpointing.Checkpointer(directory, keep=5, async_save=False)
  for step in (10, 20):
    ckpt.save(step, {"params": {"w": make(step)}}, {"step": step}, force=True)
  ckpt.wait()
  distributed.barrier("dit_jax_test_saved")
  if process_id == damaged:
    local_damage = ckpt._local_damage  # pylint: disable=protected-access

    def lagging(step):
      if step == 20:
        return checkpointing.DamagedCheckpointError("no commit_success.txt (NFS lag)")
      return local_damage(step)

    ckpt._local_damage = lagging  # pylint: disable=protected-access
  abstract = lambda meta: {"params": {"w": jax.ShapeDtypeStruct((4, 3), np.float32,
                                                         sharding=spec)}}
  step, state, _ = ckpt.restore_latest(abstract)
  value = float(sharding.gather(state["params"]["w"]).mean())
  ckpt.close()
  distributed.barrier("dit_jax_test_done")
  print("RESULT " + json.dumps({"step": step, "value": value,
                                "listing": sorted(os.listdir(directory))}), flush=True)


if __name__ == "__main__":
  main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
