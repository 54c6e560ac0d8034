"""How commands end: a stop before the configured end has its own exit status and
leaves eval.json marked unfinished; the one-shot prune trains no control unasked."""
import glob
import os
import signal
import struct

import pytest
from tensorboardX.proto import event_pb2
from tensorboardX.proto.event_pb2 import SessionLog

from dit_jax import cli, pruning, train, workdir as workdir_lib, writers
from dit_jax import hooks as hooks_lib
from tests.test_train import tiny

pytestmark = pytest.mark.loop  # both train, prune and fine-tune for real

PRUNE = {"prune.at_step": 10, "prune.finetune_steps": 10, "prune.ratio": 0.25,
         "prune.batches": 2, "prune.batch_size": 8, "prune.eval_before": False,
         "eval.at_end": True, "eval.num": 16, "memo.every": 0}


def _sigterm_in_control_at(step, monkeypatch):
  """SIGTERM once the control (the sub-run in WORKDIR/control) reaches `step`."""
  real = hooks_lib.make_hooks

  def hooks(run):
    out = real(run)
    if os.path.basename(run.workdir) == workdir_lib.CONTROL:
      out.append(("kill", lambda s, _: s == step and os.kill(os.getpid(), signal.SIGTERM)))
    return out

  monkeypatch.setattr(hooks_lib, "make_hooks", hooks)


def test_a_stop_while_the_control_trains_is_marked_and_exits_with_its_own_status(
    tmp_path, data_dir, monkeypatch):
  w = str(tmp_path / "w")
  config = tiny(data_dir, **PRUNE, **{"prune.control": True})
  _sigterm_in_control_at(15, monkeypatch)
  run = train.train_and_evaluate(config, w)
  monkeypatch.undo()
  ev = workdir_lib.read_eval(w)
  # the pruned run's own end evaluation finished; its control did not
  assert ev["step"] == 20 and "mem_ratio" in ev
  assert ev["control"] == {"finished": False, "step": 15, "steps": 20}
  assert ev["unfinished"] == {"finished": False, "step": 20, "steps": 20,
                              "sections": ["control"]}
  with pytest.raises(SystemExit) as info:
    cli.finish(run)
  assert info.value.code == cli.STOPPED_EXIT != 0

  again = train.train_and_evaluate(config, w)  # the same command finishes the control
  ev = workdir_lib.read_eval(w)
  assert "unfinished" not in ev and "mem_ratio" in ev["control"]
  assert ev["control"]["step"] == 20
  cli.finish(again)  # returns: exit status 0
  # TensorBoard drops what the stopped control logged after its checkpoint at 15
  assert _purge_steps(os.path.join(w, workdir_lib.CONTROL)) == [[11], [16]]
  assert _purge_steps(w) == [[1], [21]]


def _purge_steps(workdir):
  """Per event file, oldest first: the steps of its session-start events, from which
  TensorBoard drops the events of older files (read without TensorFlow)."""
  out = []
  for file in sorted(glob.glob(os.path.join(workdir, "events.out.tfevents.*")),
                     key=os.path.getmtime):
    with open(file, "rb") as f:
      data = f.read()
    steps, i = [], 0
    while i < len(data):  # TFRecord: length (8 bytes), its crc (4), event, its crc (4)
      n = struct.unpack("<Q", data[i:i + 8])[0]
      event = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
      i += 12 + n + 4
      if event.HasField("session_log") and event.session_log.status == SessionLog.START:
        steps.append(event.step)
    out.append(steps)
  return out


def test_the_one_shot_prune_trains_a_control_only_when_asked_and_from_the_source_step(
    tmp_path, data_dir):
  src = str(tmp_path / "src")
  # a source run whose config asks for a control (as configs/default.py does), with
  # no prune of its own
  train.train_and_evaluate(tiny(data_dir, **dict(
      PRUNE, **{"prune.at_step": -1, "prune.control": True, "train.steps": 10})), src)
  fields = dict(ratio=0.5, method="magnitude", batches=2, batch_size=8, finetune_steps=5)

  plain = str(tmp_path / "plain")
  config, _ = pruning.prune_workdir(src, plain, **fields)
  train.train_and_evaluate(config, plain)
  assert not os.path.exists(os.path.join(plain, workdir_lib.CONTROL))
  assert "control" not in workdir_lib.read_eval(plain)

  asked = str(tmp_path / "asked")
  config, _ = pruning.prune_workdir(src, asked, control=True, **fields)
  run = train.train_and_evaluate(config, asked)
  control = os.path.join(asked, workdir_lib.CONTROL)
  # trained from the source's step 10 to 15, not from scratch
  assert [r["step"] for r in writers.read_metrics(control) if "train/loss" in r] == [15]
  assert run.control["step"] == 15 and workdir_lib.read_eval(asked)["control"]["step"] == 15
  assert workdir_lib.read_eval(control)["prune"]["heads"] == [4, 4]  # nothing removed
