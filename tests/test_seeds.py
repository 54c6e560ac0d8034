"""Seed-parallel training: K seeds in one program end where K single-seed runs end."""
import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import default
from dit_jax import configlib, seeds, train, workdir as workdir_lib, writers
from dit_jax.configlib import ConfigError


def tiny(data_dir, **overrides):
  config = default.get_config("runlocal")
  return configlib.with_overrides(config, {
      "data.data_dir": data_dir, "train.steps": 30, "checkpoint.every": 10,
      "memo.every": 0, "sample.every": 0, "eval.num": 0, "eval.at_end": True, **overrides})


def final(workdir):
  _, _, state, meta = workdir_lib.load(workdir)
  return state, meta


def assert_close(a, b):
  """Leaf by leaf, |a - b| / |a| under 1e-4 (measured: ~1e-6 after 30 steps).

  vmap's kernels sum in another order. The qkv bias gets 1e-2: the key bias's gradient
  is zero in exact arithmetic (softmax ignores a shift shared by every key), so in
  both runs Adam normalizes rounding noise into steps of size lr there (~1e-3 measured).
  """
  def one(path, x, y):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    err = np.linalg.norm(x - y) / max(np.linalg.norm(x), 1e-12)
    assert err < (1e-2 if "qkv_b" in jax.tree_util.keystr(path) else 1e-4), (path, err)
  jax.tree_util.tree_map_with_path(one, a, b)


@pytest.mark.loop
def test_two_seeds_together_end_like_two_single_runs(tmp_path, data_dir):
  tracked = {"memo.every": 10}
  group = seeds.train_and_evaluate(tiny(data_dir, seeds=2, **tracked), str(tmp_path / "k"))
  assert [r.config.seed for r in group.runs] == [0, 1]
  assert int(group.runs[1].state["step"]) == 30
  params = {}
  for seed in (0, 1):
    single = str(tmp_path / f"s{seed}")
    train.train_and_evaluate(tiny(data_dir, seed=seed, **tracked), single)
    together = seeds.seed_workdir(str(tmp_path / "k"), seed)
    a, meta_a = final(single)
    b, meta_b = final(together)
    assert meta_a["run"] == meta_b["run"] and meta_b["step"] == 30  # same fingerprint
    assert_close(a, b)
    params[seed] = b["params"]
    # the same metrics, tracker included, at the same steps
    ra, rb = writers.read_metrics(single), writers.read_metrics(together)
    assert [r["step"] for r in ra] == [r["step"] for r in rb]
    for key in ("train/loss", "memo/gap", "memo_ema/heldout_loss"):
      np.testing.assert_allclose([r[key] for r in ra if key in r],
                                 [r[key] for r in rb if key in r], rtol=1e-3, atol=1e-6)
    assert json.load(open(os.path.join(together, "config.json")))["seed"] == seed
  # the seeds are different models: a broadcast state would pass the checks above only
  # if the single runs were alike too, so say it outright
  leaf = lambda p: jax.tree.leaves(p)[0]
  assert not np.allclose(leaf(params[0]), leaf(params[1]))


@pytest.mark.loop
def test_sigterm_then_resume_ends_like_one_uninterrupted_run(tmp_path, data_dir, monkeypatch):
  straight = str(tmp_path / "straight")
  seeds.train_and_evaluate(tiny(data_dir, seeds=2), straight)

  stopped = str(tmp_path / "stopped")
  real_batch = seeds._batch
  def batch_then_sigterm(runs, step, *args):
    if step == 17:
      os.kill(os.getpid(), signal.SIGTERM)
    return real_batch(runs, step, *args)
  monkeypatch.setattr(seeds, "_batch", batch_then_sigterm)
  group = seeds.train_and_evaluate(tiny(data_dir, seeds=2), stopped)
  assert group.stop_requested
  for run in group.runs:
    assert run.ckpt.all_steps()[-1] == 17 and int(run.state["step"]) == 17
  monkeypatch.setattr(seeds, "_batch", real_batch)
  group = seeds.train_and_evaluate(tiny(data_dir, seeds=2), stopped)
  assert not group.stop_requested
  for seed in (0, 1):
    a, _ = final(seeds.seed_workdir(straight, seed))
    b, _ = final(seeds.seed_workdir(stopped, seed))
    jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.mark.loop
def test_a_seed_resumes_alone_and_mismatched_seeds_are_refused(tmp_path, data_dir):
  w = str(tmp_path / "k")
  seeds.train_and_evaluate(tiny(data_dir, seeds=2, **{"train.steps": 10}), w)
  # one seed carried on by itself, as a single-seed run of its own workdir
  run = train.train_and_evaluate(tiny(data_dir, seed=1, **{"train.steps": 20}),
                                 seeds.seed_workdir(w, 1))
  assert int(run.state["step"]) == 20
  with pytest.raises(ConfigError, match="seed 0: 10, seed 1: 20"):
    seeds.train_and_evaluate(tiny(data_dir, seeds=2, **{"train.steps": 30}), w)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ON_TWO_DEVICES = """
import json, sys
import jax
sys.path.insert(0, {root!r})
from tests.test_seeds import tiny
from dit_jax import seeds
jax.config.update("jax_compilation_cache_dir", {cache!r})
group = seeds.train_and_evaluate(tiny({data_dir!r}, seeds=2), {w!r})
leaf = jax.tree.leaves(group.state["params"])[0]
print("RESULT" + json.dumps(dict(devices=sorted(d.id for d in leaf.devices()),
                                 per_device=list(leaf.addressable_shards[0].data.shape))))
"""


@pytest.mark.loop
def test_seeds_split_over_the_local_devices_train_the_same_models(tmp_path, data_dir):
  """Two fake CPU devices, two seeds: one seed each, and the same models as on one device."""
  spread = str(tmp_path / "two")
  code = ON_TWO_DEVICES.format(root=ROOT, cache=os.path.join(ROOT, ".jax_cache"),
                               data_dir=data_dir, w=spread)
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
  proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                        text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  got = json.loads(next(l for l in proc.stdout.splitlines()
                        if l.startswith("RESULT"))[len("RESULT"):])
  assert got["devices"] == [0, 1] and got["per_device"][0] == 1  # one seed per device
  one = str(tmp_path / "one")
  seeds.train_and_evaluate(tiny(data_dir, seeds=2), one)
  for seed in (0, 1):
    assert_close(final(seeds.seed_workdir(one, seed))[0],
                 final(seeds.seed_workdir(spread, seed))[0])


def test_config_errors_name_the_field(tmp_path, data_dir):
  with pytest.raises(ConfigError, match="config.seeds"):
    seeds.train_and_evaluate(tiny(data_dir, seeds=0), str(tmp_path / "a"))
  with pytest.raises(ConfigError, match="prune.at_step"):
    seeds.train_and_evaluate(tiny(data_dir, seeds=2, **{"prune.at_step": 10}),
                             str(tmp_path / "b"))
  assert not os.path.exists(tmp_path / "b")
