"""The benches' plumbing, without torch (CI has none; the torch-vs-JAX bench itself asserts
the two models agree before timing): every bench module imports and answers --help, the
rows, dit_jax's side, the JSON summary, the throughput bench's step."""
import ast
import glob
import importlib
import importlib.util
import json
import os
import runpy
import subprocess
import sys

import jax
import pytest

from bench.vs_torch import jax_side, rows, torch_vs_jax
from dit_jax.models import dit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = sorted(os.path.relpath(p, ROOT)
               for p in glob.glob(os.path.join(ROOT, "bench", "**", "*.py"), recursive=True))
OPTIONAL = ("torch", "diffusers")  # the reference side's packages: absent where tests run


def _imports(path):
  """(module, name or None) of every module-level import of a file."""
  for node in ast.parse(open(path, encoding="utf-8").read()).body:
    if isinstance(node, ast.Import):
      yield from ((a.name, None) for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.level == 0:
      yield from ((node.module, a.name) for a in node.names)


def _optional(module):
  return module.split(".")[0] in OPTIONAL


def unresolved_imports(path):
  """The module-level imports of a file that do not resolve, torch's left aside: what a
  module needing torch can be checked for without torch."""
  out = []
  for module, attr in _imports(path):
    if _optional(module):
      continue
    if importlib.util.find_spec(module) is None:
      out.append(module)
    elif attr and not hasattr(importlib.import_module(module), attr) and \
        importlib.util.find_spec(f"{module}.{attr}") is None:
      out.append(f"{module}.{attr}")
  return out


@pytest.mark.parametrize("path", BENCH)
def test_every_bench_module_imports_and_answers_help(path, capsys, monkeypatch):
  full = os.path.join(ROOT, path)
  assert unresolved_imports(full) == []
  if not any(_optional(m) for m, _ in _imports(full)):
    importlib.import_module(path[:-3].replace(os.sep, "."))
  if "__main__" in open(full, encoding="utf-8").read():
    monkeypatch.setattr(sys, "argv", [full, "--help"])
    with pytest.raises(SystemExit) as done:
      runpy.run_path(full, run_name="__main__")
    assert done.value.code == 0 and "usage:" in capsys.readouterr().out


def test_an_import_of_a_renamed_module_is_caught(tmp_path):
  bad = tmp_path / "bad.py"
  bad.write_text("import torch\nfrom dit_jax import evaluation, fid\nimport not_a_module\n")
  assert unresolved_imports(str(bad)) == ["dit_jax.evaluation", "not_a_module"]


def test_rows_have_the_issue_sizes():
  counts = {r["name"]: jax_side.num_params(r) for r in rows.ROWS if r["kind"] == "train"}
  assert counts == {"tiny2_8x8x1_train_b32": 1270916, "tiny2_8x8x1_train_b128": 1270916,
                    "w192d6_16x16x3_train_b128": 4163916, "S2_32x32x3_train_b32": 32471436}


def test_jax_side_runs_the_smallest_row_from_flat_params():
  row = dict(rows.QUICK_ROWS[0], batch=2)
  params = dit.init_params(jax_side.arch_for(row), jax.random.PRNGKey(0))
  flat = jax_side.flatten(params)
  back = jax_side.unflatten(flat)
  assert jax.tree.structure(back) == jax.tree.structure(params)
  run, finish = jax_side.runner(row, flat)  # compiled, run once
  run()
  run()
  finish()


def test_summary_json_medians_of_per_round_ratios():
  row = dict(rows.QUICK_ROWS[0])
  ms = {"jax": [10.0, 20.0, 30.0], "eager": [15.0, 20.0, 90.0], "compile": [5.0, 40.0, 30.0]}
  ready = {s: {"compile_s": 1.0, "matmul_gflops": 100.0} for s in ms}
  checked = {"row": row["name"], "params": 7, "flops_per_image": 1000}
  out = torch_vs_jax.summarize(row, checked, ready, ms, 1000)
  json.dumps(out)  # plain JSON
  assert out["speedup_vs_eager"] == [1.5, 1.0, 3.0] and out["median_speedup_vs_eager"] == 1.5
  assert out["median_speedup_vs_compile"] == 1.0  # median of 0.5, 2.0, 1.0
  # 3 passes x 1000 FLOPs x 32 images in 20 ms, against 100 GFLOP/s
  assert out["matmul_peak_fraction"]["jax"] == round(3 * 1000 * 32 / 0.02 / 1e9 / 100, 3)
  met = torch_vs_jax.targets_met([out])
  assert met[f"{row['name']}/eager"]["met"] and met[f"{row['name']}/compile"]["met"]
  assert not torch_vs_jax.targets_met([dict(out, median_speedup_vs_eager=1.1)])[
      f"{row['name']}/eager"]["met"]


def test_train_throughput_measures_a_32x32x3_step():
  from bench.throughput import train_throughput
  out = train_throughput.measure("tiny/2", 2, "float32", 1, peak=1e12)
  assert out["image"] == "32x32x3" and out["params"] == 1272972
  assert out["images_per_sec"] > 0 and 0 < out["mfu"] < 1 and out["peak_source"] != ""


@pytest.mark.loop  # its make_run and seeds checks train for real
def test_gpu_check_dry_run_prints_one_passing_json_line_per_result(tmp_path, data_dir):
  """bench/gpu_check.py's own steps at tiny sizes on the CPU (its cifar10 step, two
  trainings and FID evaluations, is left to the GPU run: minutes on a CPU)."""
  done = subprocess.run(
      [sys.executable, os.path.join(ROOT, "bench", "gpu_check.py"), "--out",
       str(tmp_path / "out"), "--cpu-dry-run", "--data_dir", data_dir,
       "--checks", "install,backend,make_run,throughput,seeds"],
      cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
  lines = [json.loads(l) for l in done.stdout.splitlines() if l.startswith("{")]
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  assert [l["check"] for l in lines] == ["install", "backend", "make_run", "throughput",
                                         "seeds"]
  assert all(l["ok"] for l in lines), lines
  assert ".[test,cuda12]" in lines[0]["pip"]  # shown by make -n, not installed
  assert lines[2]["step"] == 10 and lines[2]["steps_per_sec"] > 0
  assert lines[3]["variant"] == "tiny/2" and 0 < lines[3]["mfu"] < 1
  assert lines[4]["bench"] == "seed_throughput" and lines[4]["params"] == 1270916
  assert set(lines[4]["model_steps_per_sec"]) == {"1", "2"}
  assert all(v > 0 for v in lines[4]["model_steps_per_sec"].values())
