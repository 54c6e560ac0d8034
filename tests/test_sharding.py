"""Data parallel and FSDP on 8 fake CPU devices agree with one device; checkpoints
move between device counts; the mesh comes from config.mesh."""
import json
import os
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from tests.test_train import tiny
from dit_jax import configlib, sharding, train, writers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TRAIN = """
import json, sys
import jax, numpy as np
sys.path.insert(0, {root!r})
from tests.test_train import tiny
from dit_jax import train, writers
jax.config.update("jax_compilation_cache_dir", {cache!r})
out = {{}}
for name, data, fsdp in (("dp", -1, 1), ("fsdp", 2, 4)):
  w = {tmp!r} + "/" + name
  run = train.train_and_evaluate(
      tiny({data_dir!r}, **{{"mesh.data": data, "mesh.fsdp": fsdp, "train.steps": 10}}), w)
  qkv = run.state["params"]["blocks"][0]["qkv_w"]
  out[name] = dict(devices=jax.device_count(), loss=writers.read_metrics(w)[-1]["train/loss"],
                   qkv_spec=str(qkv.sharding.spec),
                   shard_shape=list(qkv.addressable_shards[0].data.shape))
  leaves = jax.tree.leaves(jax.device_get(run.state["params"]))
  np.savez(w + ".npz", *leaves)
print("RESULT" + json.dumps(out))
"""

RESTORE = """
import json, sys
import jax, numpy as np
sys.path.insert(0, {root!r})
from dit_jax import workdir
_, _, state, meta = workdir.load({w!r})
saved = np.load({w!r} + ".npz")
leaves = jax.tree.leaves(state["params"])
same = all(np.array_equal(np.asarray(a), saved[f"arr_{{i}}"]) for i, a in enumerate(leaves))
print("RESULT" + json.dumps(dict(devices=jax.device_count(), step=meta["step"], same=same)))
"""


def _run(code, devices):
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT"))
  return json.loads(line[len("RESULT"):])


@pytest.mark.loop
def test_eight_devices_match_one_and_checkpoints_move_between_device_counts(tmp_path, data_dir):
  out = _run(TRAIN.format(root=ROOT, cache=os.path.join(ROOT, ".jax_cache"), tmp=str(tmp_path),
                          data_dir=data_dir), 8)
  w = str(tmp_path / "one")
  train.train_and_evaluate(tiny(data_dir, **{"train.steps": 10}), w)
  one = writers.read_metrics(w)[-1]["train/loss"]

  dp, fsdp = out["dp"], out["fsdp"]
  assert dp["devices"] == 8
  assert "fsdp" not in dp["qkv_spec"]  # replicated
  assert "fsdp" in fsdp["qkv_spec"]  # split over the 4 fsdp devices
  assert np.prod(fsdp["shard_shape"]) * 4 == 64 * 3 * 4 * 16
  # the same batches and noise: only the reduction order differs
  np.testing.assert_allclose(dp["loss"], one, rtol=1e-4)
  np.testing.assert_allclose(fsdp["loss"], one, rtol=1e-4)
  # the FSDP checkpoint written on 8 devices restores, bit for bit, on 1 and on 4
  for devices in (1, 4):
    got = _run(RESTORE.format(root=ROOT, w=str(tmp_path / "fsdp")), devices)
    assert got == dict(devices=devices, step=10, same=True)


@pytest.mark.parametrize("data, fsdp, devices, want", [
    (-1, 1, 8, (8, 1)), (2, -1, 8, (2, 4)), (-1, 4, 8, (2, 4)), (8, 1, 8, (8, 1))])
def test_mesh_shape_from_config(data, fsdp, devices, want):
  cfg = ml_collections.ConfigDict(dict(data=data, fsdp=fsdp))
  assert sharding.mesh_shape(cfg, devices) == want


@pytest.mark.parametrize("data, fsdp, match", [
    (-1, -1, "both -1"), (3, -1, "multiple of 3"), (2, 2, "2 x 2 must be the 8"),
    (0, 1, r"config\.mesh\.data must be a positive integer")])
def test_bad_mesh_is_named(data, fsdp, match):
  cfg = ml_collections.ConfigDict(dict(data=data, fsdp=fsdp))
  with pytest.raises(configlib.ConfigError, match=match):
    sharding.mesh_shape(cfg, 8)


def test_a_process_reads_only_its_rows():
  mesh = sharding.make_mesh()
  assert sharding.process_slice(mesh, 32) == slice(0, 32)  # one process: all rows
  assert jax.process_count() == 1
