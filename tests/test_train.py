"""The whole training loop on tiny configs: outputs, resume, stop, bad input."""
import json
import os
import signal

import jax
import numpy as np
import pytest

from configs import default
from dit_jax import configlib, sampling, train, train_step, workdir as workdir_lib, writers


def tiny(data_dir, **overrides):
  config = default.get_config("runlocal")
  return configlib.with_overrides(config, {"data.data_dir": data_dir, **overrides})


def final_params(workdir):
  _, _, state, meta = workdir_lib.load(workdir)
  return state, meta


@pytest.mark.loop
def test_whole_loop_writes_the_workdir(tmp_path, data_dir):
  w = str(tmp_path / "w")
  run = train.train_and_evaluate(tiny(data_dir, **{"sample.every": 20}), w)
  rows = writers.read_metrics(w)
  assert [r["step"] for r in rows] == [5, 10, 15, 20]
  for key in ("train/loss", "train/grad_norm", "train/lr", "train/param_norm"):
    assert np.isfinite(rows[-1][key])
  assert "train/steps_per_sec" in rows[-1]
  for prefix in ("memo", "memo_ema"):  # the gap tracker ran at steps 10 and 20
    assert {f"{prefix}/train_loss", f"{prefix}/heldout_loss", f"{prefix}/gap",
            f"{prefix}/gap_index_t3"} <= set(rows[-1])
  assert rows[-1]["memo/emp_loss"] < rows[-1]["memo/emp_heldout_loss"]
  assert sorted(os.listdir(os.path.join(w, "checkpoints")))[:2] == ["10", "20"]
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(w))
  assert os.path.exists(os.path.join(w, "samples", "step_0000020.png"))
  assert json.load(open(os.path.join(w, "config.json")))["model"]["heads"] == [4, 4]
  assert int(run.state["step"]) == 20
  state, meta = final_params(w)
  assert meta["step"] == 20 and meta["arch"]["heads"] == [4, 4]
  # the loss went down from its first logged value
  assert rows[-1]["train/loss"] < rows[0]["train/loss"]


@pytest.mark.loop
def test_stop_and_resume_equals_one_run(tmp_path, data_dir):
  """SIGTERM mid-run checkpoints; the resumed run ends bit-for-bit like one run."""
  straight = str(tmp_path / "straight")
  train.train_and_evaluate(tiny(data_dir), straight)

  stopped = str(tmp_path / "stopped")
  def sigterm_at_7(step, metrics):
    if step == 7:
      os.kill(os.getpid(), signal.SIGTERM)
  run = train.train_and_evaluate(tiny(data_dir), stopped, extra_hooks=[("kill", sigterm_at_7)])
  assert int(run.state["step"]) == 7
  assert 7 in run.ckpt.all_steps()
  train.train_and_evaluate(tiny(data_dir), stopped)

  a, _ = final_params(straight)
  b, _ = final_params(stopped)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  last = lambda w: writers.read_metrics(w)[-1]["train/loss"]
  assert last(straight) == last(stopped)


@pytest.mark.loop
def test_more_steps_continue_a_finished_run(tmp_path, data_dir, monkeypatch):
  monkeypatch.chdir(tmp_path)
  w = "w"  # relative, as users type it
  train.train_and_evaluate(tiny(data_dir), w)
  run = train.train_and_evaluate(tiny(data_dir, **{"train.steps": 30}), w)
  assert int(run.state["step"]) == 30
  assert [r["step"] for r in writers.read_metrics(w)][-2:] == [25, 30]


@pytest.mark.loop
def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tmp_path, data_dir, monkeypatch):
  w = str(tmp_path / "w")
  good = train_step.get_batch
  def poisoned(dataset, seed, step, batch_size, mesh, labels=False):
    batch = good(dataset, seed, step, batch_size, mesh, labels)
    if step == 12:  # the batch of step 13
      batch["x"] = np.full_like(batch["x"], np.nan)
    return batch
  monkeypatch.setattr(train_step, "get_batch", poisoned)
  with pytest.raises(train_step.NonFiniteLossError, match="at step 13"):
    train.train_and_evaluate(tiny(data_dir), w)
  state, meta = final_params(w)
  assert meta["step"] == 10
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state["params"]))


@pytest.mark.parametrize("overrides, field", [
    ({"model.hidden": 66}, "config.model.hidden"),
    ({"model.variant": "tiny/3"}, "config.model.variant"),
    ({"data.name": "gmm", "data.image_size": 6, "model.variant": "tiny/4"},
     "config.data.image_size"),
    ({"data.name": "no_such_dataset"}, "config.data.name"),
    ({"data.n_train": 5000}, "config.data.n_train"),
    ({"train.steps": 0}, "config.train.steps"),
    ({"train.batch_size": -1}, "config.train.batch_size"),
    ({"train.lr": 0.0}, "config.train.lr"),
])
def test_bad_input_is_rejected_before_anything_runs(tmp_path, data_dir, overrides, field):
  w = tmp_path / "w"
  with pytest.raises(ValueError, match=field.replace(".", r"\.")):
    train.train_and_evaluate(tiny(data_dir, **overrides), str(w))
  assert not (w / "checkpoints").exists()


@pytest.mark.loop
def test_architecture_mismatch_leaves_the_workdir_alone(tmp_path, data_dir):
  w = tmp_path / "w"
  train.train_and_evaluate(tiny(data_dir, **{"train.steps": 10}), str(w))
  before = {p: p.stat().st_mtime_ns for p in w.rglob("*")}
  with pytest.raises(ValueError, match="architecture"):
    train.train_and_evaluate(tiny(data_dir, **{"model.hidden": 32}), str(w))
  assert {p: p.stat().st_mtime_ns for p in w.rglob("*")} == before


@pytest.mark.loop
def test_class_conditional_training_and_guided_sampling(tmp_path, data_dir):
  w = str(tmp_path / "w")
  run = train.train_and_evaluate(
      tiny(data_dir, **{"data.conditional": True, "train.steps": 10}), w)
  assert run.setup.arch.num_classes == 10
  assert run.state["params"]["label_embed"].shape == (11, 64)  # + the null label
  out = str(tmp_path / "s.png")
  assert sampling.sample_to_png(w, out, num=4, steps=3, guidance=2.0) == 10
  assert os.path.getsize(out) > 0


@pytest.mark.parametrize("field, value", [("seed", 1), ("data.name", "gmm"),
                                          ("data.n_train", 16)])
@pytest.mark.loop
def test_resume_refuses_a_changed_run_before_compiling(tmp_path, data_dir, monkeypatch,
                                                       field, value):
  w = tmp_path / "w"
  train.train_and_evaluate(tiny(data_dir, **{"train.steps": 10}), str(w))
  before = {p: p.stat().st_mtime_ns for p in w.rglob("*")}
  built = train_step.jit_train_step
  monkeypatch.setattr(train_step, "jit_train_step",
                      lambda *a: pytest.fail("compiled a step for a refused run"))
  with pytest.raises(ValueError, match=rf"config\.{field.replace('.', '[.]')}: .* now"):
    train.train_and_evaluate(tiny(data_dir, **{"train.steps": 20, field: value}), str(w))
  assert {p: p.stat().st_mtime_ns for p in w.rglob("*")} == before
  monkeypatch.setattr(train_step, "jit_train_step", built)
  run = train.train_and_evaluate(tiny(data_dir, **{"train.steps": 20}), str(w))
  assert int(run.state["step"]) == 20  # the original config resumes


@pytest.mark.loop
def test_the_final_evaluation_holds_the_workdir_lock(tmp_path, data_dir, monkeypatch):
  from dit_jax import evaluate, workdir_lock
  w = str(tmp_path / "w")
  real, seen = evaluate.evaluate, []

  def checking(*args, **kwargs):
    with pytest.raises(workdir_lock.WorkdirError, match="is training in workdir"):
      workdir_lock.acquire(w)
    seen.append(True)
    return real(*args, **kwargs)
  monkeypatch.setattr(evaluate, "evaluate", checking)
  train.train_and_evaluate(tiny(data_dir, **{"eval.at_end": True, "eval.num": 8,
                                             "train.steps": 10}), w)
  assert seen == [True]
  assert json.load(open(os.path.join(w, "config.json")))["model"]["fence"] == "auto"
