"""memo.stop_at: training ends at the first tracker reading that reaches it, is
evaluated there, stays stopped when resumed, and goes on when the threshold is raised."""
import json
import os

import pytest

from dit_jax import cli, config_check, memorization, pruning, seeds, train, writers
from dit_jax import workdir as workdir_lib
from dit_jax.configlib import ConfigError
from dit_jax.study import sweep
from tests.test_train import tiny


def test_the_reading_is_the_index_on_a_known_density_else_the_relative_gap():
  name, value = memorization.stop_reading(
      {"memo_ema/index": 0.7, "memo_ema/gap": 0.1, "memo_ema/heldout_loss": 0.5})
  assert (name, value) == ("memo_ema/index", 0.7)
  name, value = memorization.stop_reading({"memo_ema/gap": 0.1, "memo_ema/heldout_loss": 0.4})
  assert name == "memo_ema/gap / memo_ema/heldout_loss" and value == pytest.approx(0.25)


def test_the_summary_names_the_first_crossing_or_the_last_reading(capsys):
  rows = [{"step": 5, "train/loss": 1.0}]  # a logged step without the tracker
  rows += [{"step": s, "memo_ema/gap": g, "memo_ema/heldout_loss": 1.0}
           for s, g in ((20, 0.6), (10, 0.2), (15, 0.55))]  # out of order: read by step
  assert memorization.first_crossing(rows, 0.5)[::3] == (15, True)
  assert memorization.first_crossing(rows, 0.9) == (
      20, "memo_ema/gap / memo_ema/heldout_loss", 0.6, False)
  assert memorization.first_crossing(rows[:1], 0.5) == (None, None, None, False)
  cli.print_tracker_crossing(rows, 0.5)
  cli.print_tracker_crossing(rows, 0.9)
  cli.print_tracker_crossing(rows[:1], 0.5)  # no tracker: says nothing
  out = capsys.readouterr().out.splitlines()
  assert len(out) == 2
  assert "first reached 0.5 at step 15 (0.550)" in out[0] and "memo.stop_at=0.5" in out[0]
  assert "stayed below 0.9 (last 0.600 at step 20)" in out[1]


@pytest.mark.parametrize("overrides, words", [
    ({"memo.stop_at": -0.5}, "memo.stop_at must be a number >= 0"),
    ({"memo.stop_at": 0.5, "memo.every": 0}, "memo.every=0 turns the tracker off"),
    ({"memo.stop_at": 0.5, "prune.at_step": 10, "prune.finetune_steps": 10},
     "could end training before the prune"),
])
def test_settings_it_cannot_honour_are_refused_before_anything_runs(overrides, words):
  config = tiny("/nonexistent", **overrides)
  with pytest.raises(ConfigError, match=words):
    config_check.validate(config)


def test_seeds_trained_together_refuse_it():
  with pytest.raises(ConfigError, match="would stop at different steps"):
    seeds.check_config(tiny("/nonexistent", **{"memo.stop_at": 0.5}), 2)


def _scripted_readings(monkeypatch, values):
  """The tracker's reading at its successive calls (the real metrics are still written)."""
  calls = iter(values)
  monkeypatch.setattr(memorization, "stop_reading", lambda metrics: ("scripted", next(calls)))


@pytest.mark.loop
def test_a_run_stops_at_the_crossing_stays_stopped_and_goes_on_when_raised(
    tmp_path, data_dir, monkeypatch, capsys):
  w = str(tmp_path / "w")
  config = tiny(data_dir, **{"memo.every": 5, "memo.stop_at": 0.5, "eval.num": 16,
                             "eval.at_end": True})
  _scripted_readings(monkeypatch, [0.1, 0.3, 0.9])  # steps 5, 10, 15
  run = train.train_and_evaluate(config, w)
  assert run.tracker_stop == {"step": 15, "metric": "scripted", "reading": 0.9,
                              "threshold": 0.5}
  assert max(r["step"] for r in writers.read_metrics(w)) == 15
  assert max(int(d) for d in os.listdir(os.path.join(w, "checkpoints")) if d.isdigit()) == 15
  ev = workdir_lib.read_eval(w)
  assert ev["step"] == 15 and ev["tracker_stop"]["step"] == 15 and "unfinished" not in ev
  assert sweep._is_done(w, config)  # a sweep reads it as finished, not to be rerun
  cli.print_summary(run)
  printed = capsys.readouterr().out
  assert "stopped by the tracker at step 15 of 20: scripted 0.900 >= memo.stop_at 0.5" in printed
  assert "advice" not in printed  # the advice follows a prune only

  # the same command again: nothing to train, the same end
  _scripted_readings(monkeypatch, [])  # the tracker is not called
  again = train.train_and_evaluate(config, w)
  assert max(r["step"] for r in writers.read_metrics(w)) == 15
  assert again.tracker_stop["step"] == 15 and workdir_lib.read_eval(w)["step"] == 15

  # pruning the stopped run fine-tunes from its stop, with no tracker stop of its own
  pruned, _ = pruning.prune_workdir(w, str(tmp_path / "pruned"), ratio=0.5,
                                    method="magnitude", batches=2, batch_size=8,
                                    finetune_steps=5)
  assert pruned.train.steps == 20 and pruned.memo.stop_at == 0
  _, _, _, meta = workdir_lib.load(str(tmp_path / "pruned"))
  assert meta["step"] == 15 and meta["tracker_stop"] is None

  # a higher threshold lets the run go on to train.steps, and the record goes
  raised = tiny(data_dir, **{"memo.every": 5, "memo.stop_at": 0.95, "eval.num": 16,
                             "eval.at_end": True})
  assert not sweep._is_done(w, raised)
  _scripted_readings(monkeypatch, [0.2])  # step 20
  on = train.train_and_evaluate(raised, w)
  assert on.tracker_stop is None and on.summary["step"] == 20
  ev = workdir_lib.read_eval(w)
  assert ev["step"] == 20 and "tracker_stop" not in ev
  with open(os.path.join(w, "config.json"), encoding="utf-8") as f:
    assert json.load(f)["memo"]["stop_at"] == 0.95
