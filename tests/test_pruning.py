"""Importance, surgery and pruning inside training."""
import json
import os
import signal

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from dit_jax import cli, config_check, configlib, importance, pruning, state as state_lib, train
from dit_jax import train_step
from dit_jax.models import dit
from tests.test_train import final_params, tiny


def setup_and_state(seed=0, heads=(4, 4), mlp=(64, 64)):
  arch = dit.Arch(image_size=8, channels=1, patch=2, hidden=32, head_dim=8, heads=heads,
                  mlp=mlp)
  config = config_check.finalize(tiny(None))
  setup = state_lib.make_setup(config, arch)
  state = state_lib.init_state(setup, jax.random.PRNGKey(seed))
  # leave adaLN-Zero's identity: random weights everywhere so every unit matters
  leaves, tree = jax.tree.flatten(state["params"])
  keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
  params = jax.tree.unflatten(tree, [0.3 * jax.random.normal(k, x.shape)
                                     for k, x in zip(keys, leaves)])
  return config, setup, dict(state, params=params, ema=params)


def outputs(setup, params):
  x = jax.random.normal(jax.random.PRNGKey(5), (3, 8, 8, 1))
  return dit.apply(setup.graphdef, params, x, jnp.array([0.1, 0.5, 0.9]))


def test_removing_units_with_zero_output_keeps_the_function():
  config, setup, state = setup_and_state()
  p = state["params"]
  p["blocks"][0]["out_w"] = p["blocks"][0]["out_w"].at[1].set(0.0)  # head 1 of block 0 is dead
  p["blocks"][1]["out_w"] = p["blocks"][1]["out_w"].at[3].set(0.0)
  dead = np.array([2, 5, 7, 11, 40, 63])
  p["blocks"][1]["fc2_w"] = p["blocks"][1]["fc2_w"].at[dead].set(0.0)
  state = dict(state, params=p, ema=p)
  keep_h = [np.array([0, 2, 3]), np.array([0, 1, 2])]
  keep_m = [np.arange(64), np.setdiff1d(np.arange(64), dead)]
  arch, new = pruning.surgery(setup.arch, state, keep_h, keep_m)
  assert arch.heads == (3, 3) and arch.mlp == (64, 58)
  new_setup = state_lib.make_setup(config, arch)
  np.testing.assert_allclose(outputs(new_setup, new["params"]), outputs(setup, p),
                             rtol=1e-5, atol=1e-5)
  assert new["params"]["blocks"][0]["qkv_w"].shape == (32, 3, 3, 8)
  # the optimizer moments were cut the same way, so training goes on from them
  mu = jax.tree.leaves(new["opt_state"], is_leaf=lambda x: isinstance(x, dict) and "blocks" in x)
  shapes = {tuple(x["blocks"][1]["fc1_w"].shape) for x in mu if isinstance(x, dict)}
  assert shapes == {(32, 58)}


def test_a_head_that_is_never_used_is_least_important():
  config, setup, state = setup_and_state()
  p = state["params"]
  p["blocks"][1]["out_w"] = p["blocks"][1]["out_w"].at[2].set(0.0)
  data = type("D", (), {})()
  data.train_x = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (16, 8, 8, 1)))
  data.select_x = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (16, 8, 8, 1)))
  pcfg = configlib.with_overrides(configlib.base_config(), {"prune.batches": 2,
                                                            "prune.batch_size": 8}).prune
  for method in ("head_grad", "magnitude", "contrast"):
    heads, _ = importance.importance(method, setup, p, data, pcfg, seed=0)
    flat = np.concatenate(heads)
    assert np.argmin(flat) == 4 + 2, method  # block 1, head 2
  keep_h, _ = pruning.plan(importance.importance("head_grad", setup, p, data, pcfg, 0), 0.125, 0.0)
  assert [list(k) for k in keep_h] == [[0, 1, 2, 3], [0, 1, 3]]


def test_plan_guards():
  heads = [np.array([0.1, 0.2]), np.array([0.3, 0.4, 0.5, 0.6])]
  mlp = [np.linspace(0, 1, 32), np.linspace(1, 2, 32)]
  keep_h, keep_m = pruning.plan((heads, mlp), 0.5, 0.5, min_heads=1, mlp_multiple=8)
  assert [len(k) for k in keep_h] == [1, 2]  # block 0 keeps its minimum of one head
  assert all(len(k) % 8 == 0 for k in keep_m)
  assert sum(map(len, keep_m)) >= 32
  # global ranking: the low-scoring block 0 loses MLP units first
  assert len(keep_m[0]) < len(keep_m[1])


@pytest.mark.loop
def test_prune_inside_training_and_resume_across_it(tmp_path, data_dir, capsys):
  over = {"prune.at_step": 10, "prune.finetune_steps": 10, "prune.mlp_ratio": 0.5,
          "prune.ratio": 0.25, "prune.batches": 2, "prune.batch_size": 8}
  straight = str(tmp_path / "straight")
  # the main job's path in miniature: evaluate before the prune and at the end
  evals = {"prune.eval_before": True, "eval.at_end": True, "eval.num": 16,
           "prune.control": True, "eval.at_steps": (10, 15)}
  run = train.train_and_evaluate(tiny(data_dir, **over, **evals), straight)
  ev = json.load(open(os.path.join(straight, "eval.json")))
  assert ev["before_prune"]["step"] == 10 and ev["step"] == 20
  assert ev["prune"]["num_params"] == ev["num_params"] < ev["before_prune"]["num_params"]
  # evaluated right after the prune (the pruned model), during and at the end of fine-tuning
  assert sorted(ev["by_step"], key=int) == ["10", "15", "20"]
  assert ev["by_step"]["10"]["num_params"] == ev["num_params"]
  # the control: the unpruned model from the same step, fine-tuned the same 10 steps
  control = json.load(open(os.path.join(straight, "control", "eval.json")))
  assert control["step"] == 20 and control["num_params"] == ev["before_prune"]["num_params"]
  assert ev["control"]["mem_ratio"] == control["mem_ratio"]
  assert control["prune"]["heads"] == control["prune"]["heads_before"]
  summary_md = open(os.path.join(straight, "report", "prune_summary.md")).read()
  assert "| before prune |" in summary_md and "| control: unpruned" in summary_md
  cli.print_summary(run)
  printed = capsys.readouterr().out
  assert "before prune: step 10" in printed and "after prune:  step 20" in printed
  assert "control:      step 20" in printed
  assert "stop on the tracker (--config.memo.stop_at=0.5, no prune)" in printed
  assert run.setup.arch.heads != (4, 4) and sum(run.setup.arch.heads) == 6
  # half of 2 x 256 units, each block rounded up to a multiple of 8
  assert sum(run.setup.arch.mlp) <= 256 + 2 * 7 and run.setup.arch.mlp[0] % 8 == 0
  state, meta = final_params(straight)
  assert meta["arch"]["heads"] == list(run.setup.arch.heads)
  assert meta["pruned"]["step"] == 10 and meta["base_arch"]["heads"] == [4, 4]

  stopped = str(tmp_path / "stopped")
  def sigterm_at_15(step, metrics):
    if step == 15:
      os.kill(os.getpid(), signal.SIGTERM)
  train.train_and_evaluate(tiny(data_dir, **over), stopped, extra_hooks=[("kill", sigterm_at_15)])
  train.train_and_evaluate(tiny(data_dir, **over), stopped)
  resumed, _ = final_params(stopped)
  jax.tree.map(np.testing.assert_array_equal, state, resumed)


@pytest.mark.loop
def test_capacity_search_records_its_path(tmp_path, data_dir):
  over = {"prune.at_step": 20, "prune.target": "capacity", "prune.capacity_steps": 3,
          "prune.capacity_ratios": (0.5,), "prune.tolerance": 10.0,
          "prune.batches": 2, "prune.batch_size": 8, "prune.eval_before": False}
  run = train.train_and_evaluate(tiny(data_dir, **over), str(tmp_path / "w"))
  path = run.pruned["capacity_path"]
  # heads first with every MLP unit kept, then MLP units with the heads found
  assert [(p["ratio"], p["mlp_ratio"]) for p in path] == [(0.0, 0.0), (0.5, 0.0), (0.5, 0.5)]
  assert [p.get("axis") for p in path] == [None, "heads", "mlp"]
  assert path[1]["num_params"] < path[0]["num_params"]
  # everything was within the (huge) tolerance
  assert (run.pruned["ratio"], run.pruned["mlp_ratio"]) == (0.5, 0.5)
  assert all("heldout_loss" in p for p in path) and path[0]["fit"] == "select"


@pytest.mark.loop
def test_one_shot_prune_of_a_workdir(tmp_path, data_dir):
  src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
  train.train_and_evaluate(tiny(data_dir), src)
  before = sorted(os.listdir(os.path.join(src, "checkpoints")))
  config, record = pruning.prune_workdir(src, dst, ratio=0.5, method="magnitude",
                                       batches=2, batch_size=8)
  assert sorted(os.listdir(os.path.join(src, "checkpoints"))) == before  # source untouched
  assert sum(record["heads"]) == 4
  _, meta = final_params(dst)
  assert meta["arch"]["heads"] == record["heads"]
  config.train.steps = 25
  run = train.train_and_evaluate(config, dst)  # fine-tunes the pruned model
  assert int(run.state["step"]) == 25 and run.setup.arch.heads == tuple(record["heads"])
  with pytest.raises(ValueError, match="already holds checkpoints"):
    pruning.prune_workdir(src, dst, ratio=0.5)


def test_capacity_criterion_looks_where_the_model_generalizes():
  # buckets 0-1 memorize (held-out far above train); 2-3 generalize
  ref = ([2.0, 0.5, 0.10, 0.02], [0.2, 0.1, 0.09, 0.02])
  # a candidate that forgets the training points (bucket 0 falls a lot) but loses
  # score capacity where the model generalizes: the mean over buckets improves ...
  worse = {"heldout_t": [1.0, 0.4, 0.13, 0.03]}
  assert np.mean(worse["heldout_t"]) < np.mean(ref[0])
  cand, base, gen = pruning._generalizing_loss(worse, ref)
  assert gen == [2, 3]  # ... but the criterion sees only the generalizing buckets
  assert cand / base == pytest.approx(0.16 / 0.12)
  same = {"heldout_t": [1.0, 0.4, 0.10, 0.02]}
  assert pruning._generalizing_loss(same, ref)[0] == pytest.approx(0.12)


def test_ema_restarts_at_the_prune():
  config = config_check.finalize(tiny(None, **{"prune.at_step": 10, "prune.finetune_steps": 10}))
  d = config.train.ema_decay
  decay = lambda step, cfg=config: float(train_step.ema_decay(cfg, step))
  assert decay(9) == pytest.approx(d)
  assert decay(10) == 0.0  # the first step after the prune: the EMA is the new weights
  assert decay(11) == pytest.approx(0.5) and decay(13) == pytest.approx(0.75)  # running mean
  assert decay(10 + 10 ** 5) == pytest.approx(d)  # back to d once the mean is long enough
  config.prune.ema_restart = False
  assert decay(11) == pytest.approx(d)
  config.prune.ema_restart, config.prune.at_step = True, -1
  assert decay(11) == pytest.approx(d)


def test_choosing_never_reads_the_test_split(data_dir):
  """Importance and the capacity search read train and select only: the same
  choices when every test image is replaced by noise."""
  import dataclasses
  from dit_jax import data as data_lib, sharding
  config = config_check.finalize(tiny(data_dir, **{
      "prune.batches": 2, "prune.batch_size": 8, "prune.capacity_steps": 2,
      "prune.capacity_ratios": (0.5,), "prune.capacity_probe": 16}))
  dataset = data_lib.load(config.data, config.seed)
  noisy = dataclasses.replace(dataset, test_x=np.random.default_rng(0).normal(
      size=dataset.test_x.shape).astype(np.float32))
  _, setup, state = setup_and_state()
  setup = state_lib.make_setup(config, setup.arch)
  mesh = sharding.make_mesh()
  for method in ("head_grad", "contrast"):
    a = importance.importance(method, setup, state["params"], dataset, config.prune, 0)
    b = importance.importance(method, setup, state["params"], noisy, config.prune, 0)
    jax.tree.map(np.testing.assert_array_equal, a, b)
  scores = importance.importance("contrast", setup, state["params"], dataset, config.prune, 0)
  run = lambda ds: pruning.capacity_search(config, setup, state, ds, mesh, 0, scores)
  (ratio_a, path_a), (ratio_b, path_b) = run(dataset), run(noisy)
  assert ratio_a == ratio_b and path_a == path_b


def test_per_example_mask_gradients_match_one_example_at_a_time():
  _, setup, state = setup_and_state()
  x = jax.random.normal(jax.random.PRNGKey(3), (4, 8, 8, 1))
  t = jnp.array([5, 100, 400, 900])
  noise = jax.random.normal(jax.random.PRNGKey(4), x.shape)
  heads, mlp = importance.example_mask_grads(setup, state["params"], x, t, noise)
  assert heads[0].shape == (4, 4) and mlp[1].shape == (4, 64)
  from dit_jax import diffusion
  for i in range(4):
    def loss(masks):
      eps = lambda xt, tt: dit.apply(setup.graphdef, state["params"], xt,
                                     setup.sched.net_time(tt), head_masks=masks[0],
                                     mlp_masks=masks[1])
      return diffusion.per_example_loss(eps, setup.sched, x[i:i + 1], t[i:i + 1],
                                        noise[i:i + 1]).sum()
    one = jax.grad(loss)(([jnp.ones(4)] * 2, [jnp.ones(64)] * 2))
    for got, want in zip(heads + mlp, one[0] + one[1]):
      np.testing.assert_allclose(got[i], want, rtol=1e-3, atol=1e-5)  # float32 sums


def test_specific_prunes_a_unit_that_serves_one_training_image_first():
  # a unit whose importance on one training image is far outside its spread over
  # select images is the first to go, even though its mean importance is not lowest
  rng = np.random.default_rng(0)
  select = rng.uniform(1.0, 2.0, (64, 3))
  train = rng.uniform(1.0, 2.0, (16, 3))
  train[5, 1] = 50.0  # unit 1 stands out on training image 5
  spec = importance._specificity(train, select)
  assert np.argmax(spec) == 1 and spec[1] > 5 * max(spec[0], spec[2])


def test_surgery_cuts_the_ema_and_adam_moments_at_the_params_indices():
  config, setup, state = setup_and_state()
  # every entry tells which unit it belongs to, differently in each tree
  def labelled(scale):
    def one(path, x):
      name = getattr(path[-1], "key", None)
      axes = {**pruning.HEAD_AXES, **pruning.MLP_AXES}
      if name not in axes or "blocks" not in [getattr(k, "key", None) for k in path]:
        return x
      ax = axes[name]
      shape = [1] * x.ndim
      shape[ax] = x.shape[ax]
      return jnp.broadcast_to(scale * jnp.arange(x.shape[ax], dtype=x.dtype).reshape(shape),
                              x.shape)
    return lambda tree: jax.tree_util.tree_map_with_path(one, tree)
  state = dict(state, params=labelled(1.0)(state["params"]), ema=labelled(2.0)(state["ema"]),
               opt_state=labelled(3.0)(state["opt_state"]))
  keep_h = [np.array([0, 3]), np.array([1, 2, 3])]
  keep_m = [np.arange(0, 64, 2), np.arange(8, 64)]
  _, new = pruning.surgery(setup.arch, state, keep_h, keep_m)
  for tree, scale in (("params", 1.0), ("ema", 2.0), ("opt_state", 3.0)):
    leaves = jax.tree_util.tree_leaves_with_path(new[tree])
    seen = 0
    for path, x in leaves:
      keys = [getattr(k, "key", getattr(k, "idx", None)) for k in path]
      if "blocks" not in keys or keys[-1] not in {**pruning.HEAD_AXES, **pruning.MLP_AXES}:
        continue
      block, name = keys[keys.index("blocks") + 1], keys[-1]
      kept, ax = ((keep_h, pruning.HEAD_AXES) if name in pruning.HEAD_AXES
                  else (keep_m, pruning.MLP_AXES))
      got = np.moveaxis(np.asarray(x), ax[name], 0).reshape(x.shape[ax[name]], -1)[:, 0]
      np.testing.assert_array_equal(got, scale * kept[block], err_msg=f"{tree} {keys}")
      seen += 1
    assert seen >= 12, tree  # 6 arrays x 2 blocks (the moments: mu and nu each)


def _pad_units(arch, state, heads, mlp):
  """The same model with dead units appended: zero weights everywhere they enter or leave."""
  def one(path, x):
    keys = [getattr(k, "key", getattr(k, "idx", None)) for k in path]
    if "blocks" not in keys or not hasattr(x, "shape"):
      return x
    name = keys[-1]
    axes = pruning.HEAD_AXES if name in pruning.HEAD_AXES else pruning.MLP_AXES
    if name not in axes:
      return x
    extra = (heads if axes is pruning.HEAD_AXES else mlp) - x.shape[axes[name]]
    pad = [(0, 0)] * x.ndim
    pad[axes[name]] = (0, extra)
    return jnp.pad(x, pad)
  new = {k: jax.tree_util.tree_map_with_path(one, state[k]) for k in ("params", "ema", "opt_state")}
  import dataclasses
  return (dataclasses.replace(arch, heads=(heads,) * len(arch.heads), mlp=(mlp,) * len(arch.mlp)),
          dict(state, **new))


def test_capacity_search_on_a_known_density_cuts_dead_units_and_nothing_the_score_uses():
  """With the true score to read, a model with more units than its function uses is cut
  to exactly the units it uses, and that narrower model is not cut further."""
  import types
  from dit_jax import memorization, sharding
  rng = np.random.default_rng(0)
  info = {"image_shape": [8, 8, 1], "gmm": {"means": (2.0 * rng.normal(size=(4, 64))).tolist(),
                                            "cov_diag": [1.0] * 64, "weights": [0.25] * 4}}
  dataset = types.SimpleNamespace(info=info)  # the search reads no split: no images at all
  config, setup, state = setup_and_state(heads=(2, 2), mlp=(32, 32))
  config.train.batch_size = 32
  mesh = sharding.make_mesh()
  gmm = memorization.gmm_params(info)
  # fit the narrow model to the true score first, so that each of its units matters
  probe = memorization.GroundTruthProbe(setup.sched, gmm, (8, 8, 1), 64, 4)
  draw = lambda key, n: memorization.gmm_draws(key, n, gmm, (8, 8, 1))
  state = train_step.run_distill_steps(setup, config, mesh, state, 300, draw, probe.gt_eps)
  state = dict(state, ema=state["params"])
  config.prune.update(capacity_fit="gt", capacity_steps=0, capacity_probe=64,
                      capacity_ratios=(0.5, 0.75), tolerance=0.05)
  config.memo.buckets = 4
  wide_arch, wide = _pad_units(setup.arch, state, 4, 64)
  wide_setup = state_lib.make_setup(config, wide_arch)
  # the dead units rank last; within the used ones any order
  scores = ([[1.0, 1.0, 0.0, 0.0]] * 2, [[1.0] * 32 + [0.0] * 32] * 2)
  ratios, path = pruning.capacity_search(config, wide_setup, wide, dataset, mesh, 0, scores)
  assert ratios == (0.5, 0.5), path  # the dead half of each axis, and no more
  cut = {(tuple(p["heads"]), tuple(p["mlp"])): p["loss_over_reference"] for p in path[1:]}
  assert cut[((2, 2), (64, 64))] == pytest.approx(1.0, abs=1e-4)
  assert cut[((1, 1), (64, 64))] > 1.05  # a used head: outside the tolerance
  keep_h, keep_m = pruning.plan(scores, *ratios)
  assert [len(k) for k in keep_h] == [2, 2] and [len(k) for k in keep_m] == [32, 32]
  narrow = ([[1.0, 1.0]] * 2, [[1.0] * 32] * 2)
  ratios, path = pruning.capacity_search(config, setup, state, dataset, mesh, 0, narrow)
  assert ratios == (0.0, 0.0), path
  assert all(not p["within_tolerance"] for p in path[1:]) and path[0]["fit"] == "gt"
  # the tolerance is on the excess over the true score, not on the probe's whole loss
  for p in path[1:]:
    assert p["within_tolerance"] == (p["excess_over_reference"] <= 1.05)


def test_capacity_fit_train_gt_fine_tunes_on_the_training_set_and_reads_the_excess():
  """train_gt: candidates train on the run's own images (the width that generalizes at
  this n), judged like gt by the excess over the true score on fresh draws."""
  import types
  from dit_jax import memorization, sharding
  rng = np.random.default_rng(3)
  info = {"image_shape": [8, 8, 1], "gmm": {"means": (2.0 * rng.normal(size=(2, 64))).tolist(),
                                            "cov_diag": [1.0] * 64, "weights": [0.5, 0.5]}}
  gmm = memorization.gmm_params(info)
  train_x = np.asarray(memorization.gmm_draws(jax.random.PRNGKey(1), 8, gmm, (8, 8, 1)))
  dataset = types.SimpleNamespace(info=info, train_x=train_x, train_y=None)
  config, setup, state = setup_and_state(heads=(2, 2), mlp=(32, 32))
  config.train.batch_size = 8
  config.memo.buckets = 4
  config.prune.update(capacity_fit="train_gt", capacity_steps=3, capacity_probe=32,
                      capacity_ratios=(0.5,), tolerance=100.0)
  mesh = sharding.make_mesh()
  scores = ([[1.0, 0.0]] * 2, [[1.0] * 16 + [0.0] * 16] * 2)
  ratios, path = pruning.capacity_search(config, setup, state, dataset, mesh, 7, scores)
  assert ratios == (0.5, 0.5) and [p["fit"] for p in path] == ["train_gt"] * 3
  # the reference's reading is the excess after 3 steps on the training images from step 7
  probe = memorization.GroundTruthProbe(setup.sched, gmm, (8, 8, 1), 32, 4,
                                        config.diffusion.weighting, config.seed)
  tuned = train_step.run_steps(setup, config, mesh, state, dataset, 7, 3)
  excess = np.asarray(probe.excess(state_lib.make_eps_fn(setup, tuned["params"]))).mean()
  assert path[0]["gt_excess"] == pytest.approx(float(excess), rel=1e-5)
  untuned = np.asarray(probe.excess(state_lib.make_eps_fn(setup, state["params"]))).mean()
  assert abs(path[0]["gt_excess"] - untuned) > 1e-4 * untuned  # the steps did run
  with pytest.raises(configlib.ConfigError, match="capacity_fit='train_gt'"):
    pruning.capacity_fit(config.prune, types.SimpleNamespace(info={"name": "digits"}))


def test_ground_truth_probe_measures_the_excess_over_the_true_score():
  from dit_jax import memorization
  config, setup, _ = setup_and_state()
  rng = np.random.default_rng(1)
  gmm = memorization.gmm_params({"gmm": {"means": rng.normal(size=(3, 64)).tolist(),
                                         "cov_diag": [0.5] * 64, "weights": [0.2, 0.3, 0.5]}})
  probe = memorization.GroundTruthProbe(setup.sched, gmm, (8, 8, 1), 128, 4)
  np.testing.assert_allclose(probe.excess(probe.gt_eps), 0.0, atol=1e-10)
  zero = probe.excess(lambda x, t: jnp.zeros_like(x))
  np.testing.assert_allclose(zero, probe._per_bucket(jnp.mean(probe.target ** 2, (1, 2, 3))),
                             rtol=1e-6)
  # the true score's loss is below the zero predictor's in every bucket (it is E[eps | x_t])
  assert np.all(np.asarray(probe.gt_loss) < 1.0 + 1e-6)
  x = memorization.gmm_draws(jax.random.PRNGKey(0), 20000, gmm, (8, 8, 1)).reshape(20000, -1)
  np.testing.assert_allclose(x.mean(0), np.asarray(gmm[0]).T @ np.asarray(gmm[2]), atol=0.05)


def test_capacity_fit_gt_needs_a_known_density():
  import types
  p = ml_collections.ConfigDict({"capacity_fit": "gt"})
  with pytest.raises(configlib.ConfigError, match="capacity_fit='gt'"):
    pruning.capacity_fit(p, types.SimpleNamespace(info={"name": "digits"}))
  p.capacity_fit = "auto"
  assert pruning.capacity_fit(p, types.SimpleNamespace(info={"name": "digits"})) == "select"
