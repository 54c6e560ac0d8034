"""The outer shell: the config layer's imports, the workdir's files, process-wide side effects."""
import json
import os
import subprocess
import sys

import pytest

from dit_jax import checkpointing, cli, configlib, workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _fresh(code):
  """Runs `code` in a fresh interpreter from the repo root; returns its stdout."""
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                       text=True, check=True, env=dict(os.environ, PYTHONPATH=ROOT))
  return out.stdout.strip()


def test_the_config_layer_imports_nothing_heavy():
  loaded = json.loads(_fresh(
      "import sys, json; import dit_jax.configlib; from configs import default, gmm;"
      "default.get_config(); gmm.get_config('runlocal');"
      "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
      "('tensorflow_datasets', 'flax', 'jax', 'optax', 'orbax', 'matplotlib'))))"))
  assert loaded == []


def test_one_module_spells_the_workdir_layout():
  names = ('"checkpoints"', '"eval.json"', '"config.json"', '"metrics.jsonl"', '"report"')
  spelled = set()
  for dirpath, _, files in os.walk(os.path.join(ROOT, "dit_jax")):
    for f in files:
      if f.endswith(".py"):
        text = open(os.path.join(dirpath, f), encoding="utf-8").read()
        if any(n in text for n in names):
          spelled.add(f)
  # vae.py reads the config.json that diffusers saves beside a VAE's weights: not a workdir's
  assert spelled == {"workdir.py", "vae.py"}


def test_eval_json_drops_the_fields_of_an_older_evaluation(tmp_path):
  w = str(tmp_path)
  workdir_lib.write_eval(w, {"step": 10, "mem_ratio": 0.5, "nll": 1.2},
                         by_step={"10": {"mem_ratio": 0.5}})
  workdir_lib.write_eval(w, prune={"method": "random"})  # a section keeps the summary
  assert workdir_lib.read_eval(w)["nll"] == 1.2
  out = workdir_lib.write_eval(w, {"step": 20, "mem_ratio": 0.4},
                               by_step={"20": {"mem_ratio": 0.4}})
  assert "nll" not in out and out["step"] == 20  # not a stale field from step 10
  assert sorted(out["by_step"]) == ["10", "20"] and out["prune"] == {"method": "random"}
  assert not os.path.exists(os.path.join(w, "eval.json.tmp"))


def test_a_checkpointer_restores_the_unraisable_hook(tmp_path):
  before = sys.unraisablehook
  a = checkpointing.Checkpointer(str(tmp_path / "a"))
  b = checkpointing.Checkpointer(str(tmp_path / "b"))
  assert sys.unraisablehook is not before  # filtered while a checkpointer is open
  a.close()
  assert sys.unraisablehook is not before
  b.close()
  assert sys.unraisablehook is before


def test_plotting_leaves_matplotlib_alone():
  out = _fresh(
      # rcParams['backend'] would resolve (and select) a backend: read the raw entry
      "import sys, matplotlib; raw = lambda: dict.__getitem__(matplotlib.rcParams, 'backend');"
      "before = raw(); from dit_jax import report; import numpy as np;"
      "report.plot_ratio_hist(np.ones(8), 4 * np.ones(8), '/tmp/dit_jax_hist_test.png');"
      "print(raw() == before, 'matplotlib.pyplot' in sys.modules)")
  assert out == "True False"


def test_friendly_errors_shorten_only_the_projects_own_errors():
  with pytest.raises(SystemExit, match="error: config.train.lr must be > 0"):
    with cli.friendly_errors():
      raise configlib.ConfigError("config.train.lr must be > 0, got 0.")
  with pytest.raises(ValueError, match="an internal error"):  # keeps its traceback
    with cli.friendly_errors():
      raise ValueError("an internal error")
