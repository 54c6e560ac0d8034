"""Data parallel and FSDP on 8 fake CPU devices agree with one device."""
import json
import os
import subprocess
import sys

import numpy as np

from tests.test_train import tiny
from dit_jax import train, writers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = """
import json, sys
import jax
sys.path.insert(0, {root!r})
from tests.test_train import tiny
from dit_jax import train, writers
jax.config.update("jax_compilation_cache_dir", {cache!r})
out = {{}}
for fsdp in (False, True):
  w = {tmp!r} + f"/fsdp{{int(fsdp)}}"
  run = train.train_and_evaluate(tiny({data!r}, **{{"mesh.fsdp": fsdp, "train.steps": 10}}), w)
  qkv = run.state["params"]["blocks"][0]["qkv_w"]
  out[str(fsdp)] = dict(devices=jax.device_count(),
                        loss=writers.read_metrics(w)[-1]["train/loss"],
                        qkv_spec=str(qkv.sharding.spec),
                        shard_shape=list(qkv.addressable_shards[0].data.shape))
print("RESULT" + json.dumps(out))
"""


def test_eight_devices_match_one(tmp_path, data_dir):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
  code = SCRIPT.format(root=ROOT, cache=os.path.join(ROOT, ".jax_cache"),
                       tmp=str(tmp_path), data=data_dir)
  proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT"))
  out = json.loads(line[len("RESULT"):])

  w = str(tmp_path / "one")
  train.train_and_evaluate(tiny(data_dir, **{"train.steps": 10}), w)
  one = writers.read_metrics(w)[-1]["train/loss"]

  dp, fsdp = out["False"], out["True"]
  assert dp["devices"] == 8
  assert "data" not in dp["qkv_spec"]  # replicated
  assert "data" in fsdp["qkv_spec"]  # sharded over the mesh
  assert np.prod(fsdp["shard_shape"]) * 8 == 64 * 3 * 4 * 16
  # the same batches and noise: only the reduction order differs
  np.testing.assert_allclose(dp["loss"], one, rtol=1e-4)
  np.testing.assert_allclose(fsdp["loss"], one, rtol=1e-4)
