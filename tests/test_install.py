"""The GPU and TPU installs: setup.py's extras pull JAX's own plugins at the pinned
jax's version (read from metadata, nothing downloaded), and `make ACCEL=...` installs
the extra that fits the machine."""
import ast
import importlib.metadata
import os
import stat
import subprocess

import pytest
from packaging.requirements import Requirement

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pins():
  with open(os.path.join(ROOT, "constraints.txt"), encoding="utf-8") as f:
    return dict(line.strip().split("==") for line in f if "==" in line)


def _extras():
  """setup.py's extras_require, read without running setup.py."""
  with open(os.path.join(ROOT, "setup.py"), encoding="utf-8") as f:
    call = next(n for n in ast.walk(ast.parse(f.read())) if isinstance(n, ast.Call) and
                getattr(n.func, "id", "") == "setup")
  return ast.literal_eval(next(k.value for k in call.keywords if k.arg == "extras_require"))


def _jax_extra(name):
  """{package: Requirement} that jax's own extra `name` adds, from its metadata."""
  out = {}
  for line in importlib.metadata.requires("jax"):
    req = Requirement(line)
    if req.marker is not None and req.marker.evaluate({"extra": name}) and \
        not req.marker.evaluate({"extra": ""}):
      out[req.name] = req
  return out


@pytest.mark.parametrize("extra,plugin", [("cuda12", "jax-cuda12-plugin"), ("tpu", "libtpu")])
def test_the_accelerator_extras_pull_plugins_of_the_pinned_jax(extra, plugin):
  pin = _pins()["jax"]
  assert _pins()["jaxlib"] == pin
  # jax's metadata is what pip reads for jax[extra]: it must be the pinned jax's
  assert importlib.metadata.version("jax") == pin
  reqs = [Requirement(r) for r in _extras()[extra]]
  assert [(r.name, sorted(r.extras)) for r in reqs] == [("jax", [extra])]
  adds = _jax_extra(extra)
  assert adds["jaxlib"].specifier.contains(pin) and list(adds["jaxlib"].specifier.filter(
      ["0.10.1", pin, "0.10.3", "0.11.0"])) == [pin]
  assert plugin in adds and str(adds[plugin].specifier)  # a pinned plugin, not any version
  if plugin == "jax-cuda12-plugin":  # the CUDA plugin is released with jax, same number
    assert list(adds[plugin].specifier.filter(["0.10.1", pin, "0.10.3"])) == [pin]


def _make_n(accel, env=None):
  done = subprocess.run(["make", "-n", "-B", "run", f"ACCEL={accel}"], cwd=ROOT, env=env,
                        capture_output=True, text=True, check=False, timeout=60)
  return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize("accel,extras", [("cuda12", "test,cuda12"), ("tpu", "test,tpu"),
                                          ("cpu", "test")])
def test_make_run_installs_the_extra_accel_names(accel, extras):
  rc, out = _make_n(accel)
  assert rc == 0, out
  assert f"pip install -q -c constraints.txt -e '.[{extras}]'" in out
  assert "scripts/train.py" in out


def test_make_auto_finds_an_nvidia_gpu_and_refuses_an_unknown_accel(tmp_path):
  fake = tmp_path / "nvidia-smi"  # what a GPU machine's driver puts on PATH
  fake.write_text("#!/bin/sh\nexit 0\n")
  fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
  env = dict(os.environ, PATH=f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
  rc, out = _make_n("auto", env)
  assert rc == 0 and "-e '.[test,cuda12]'" in out, out
  rc, out = _make_n("rocm")
  assert rc != 0 and "ACCEL=rocm: use auto, cpu, cuda12 or tpu" in out
