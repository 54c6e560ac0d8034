"""The prepared accelerator check, for a machine with an NVIDIA GPU: within 10 minutes,
one JSON line per result.

  python3 bench/gpu_check.py --out /tmp/gpu_check            # on the GPU machine
  python3 bench/gpu_check.py --out /tmp/gpu_check --cpu-dry-run   # every step, tiny, on CPU
  python3 bench/gpu_check.py --out DIR --cpu-dry-run --checks install,backend,make_run

The steps, each its own process under its share of the time budget:
  install     `make .venv/.installed ACCEL=cuda12` (the dry run: `make -n`, the pip line)
  backend     the backend and devices JAX sees (must be gpu, except in the dry run)
  make_run    `make run ACCEL=cuda12` (the dry run: scripts/train.py on the runlocal config);
              at its budget it gets a SIGTERM, checkpoints and stops (exit 75), and its
              line reports how far it got
  throughput  bench/throughput/train_throughput.py: S/2 and B/2 in bf16 at batch 256, images/s, MFU
  seeds       bench/seed_throughput.py: model-steps/s of 1 and 8 tiny/2 seeds in one program
              against one seed's loop (90 s)
  cifar10     bench/throughput/cifar10_short.py, shortened to fit (record.json's numbers)
A step that fails or runs out of time prints its line (`ok: false`, its log's tail) and the
check goes on. Exit status 0 when every step passed.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_PY = os.path.join(ROOT, ".venv", "bin", "python")
STOPPED = 75  # dit_jax's exit status for a run stopped before its end (docs/SCALE.md)


def run(cmd, budget_s, cwd=ROOT):
  """(returncode, output, wall seconds, timed out); at the budget a SIGTERM to the whole
  process group (make and its python), then 60 s to checkpoint, then SIGKILL."""
  t0 = time.perf_counter()
  proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, start_new_session=True)
  try:
    out, _ = proc.communicate(timeout=budget_s)
    timed_out = False
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
      out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
      os.killpg(proc.pid, signal.SIGKILL)
      out, _ = proc.communicate()
    timed_out = True
  return proc.returncode, out, round(time.perf_counter() - t0, 1), timed_out


def emit(check, ok, **fields):
  print(json.dumps({"check": check, "ok": bool(ok), **fields}), flush=True)
  return bool(ok)


def json_lines(text):
  out = []
  for line in text.splitlines():
    if line.startswith("{"):
      try:
        out.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return out


def install(args, python):
  del python  # make picks the venv's
  dry = ["-n", "-B"] if args.cpu_dry_run else []
  rc, out, wall, timed_out = run(["make", *dry, ".venv/.installed", "ACCEL=cuda12"], 60)
  pip = [line for line in out.splitlines() if "pip install" in line and "-e '" in line]
  return emit("install", rc == 0 and pip and ".[test,cuda12]" in pip[-1], wall_s=wall,
              timed_out=timed_out, pip=pip[-1] if pip else None, tail=out[-1500:])


BACKEND = ("import jax, json; print(json.dumps({'backend': jax.default_backend(), "
           "'devices': [d.device_kind for d in jax.devices()], 'jax': jax.__version__}))")


def backend(args, python):
  rc, out, wall, _ = run([python, "-c", BACKEND], 120)
  found = (json_lines(out) or [{}])[-1]
  wanted = "cpu" if args.cpu_dry_run else "gpu"
  return emit("backend", rc == 0 and found.get("backend") == wanted, wall_s=wall, **found,
              tail=None if found else out[-1500:])


def metrics_tail(workdir):
  """The last train row and the evaluation of a finished or stopped run."""
  rows = []
  path = os.path.join(workdir, "metrics.jsonl")
  if os.path.exists(path):
    rows = json_lines(open(path, encoding="utf-8").read())
  last = next((r for r in reversed(rows) if "train/loss" in r), {})
  rates = [r["train/steps_per_sec"] for r in rows if "train/steps_per_sec" in r]
  ev = {}
  if os.path.exists(os.path.join(workdir, "eval.json")):
    ev = json.load(open(os.path.join(workdir, "eval.json"), encoding="utf-8"))
  return {"step": last.get("step"), "loss": last.get("train/loss"),
          "steps_per_sec": sorted(rates)[len(rates) // 2] if rates else None,
          "mfu": last.get("train/mfu"),
          **{k: ev.get(k) for k in ("mem_ratio", "fd", "num_params") if k in ev}}


def make_run(args, python):
  workdir = os.path.join(args.out, "default")
  if args.cpu_dry_run:
    cmd = [python, "scripts/train.py", "--config", "configs/default.py:runlocal",
           "--workdir", workdir, "--config.train.steps=10", "--config.log_every=5",
           "--config.memo.every=0", "--config.sample.every=0"]
    if args.data_dir:
      cmd.append(f"--config.data.data_dir={args.data_dir}")
  else:
    cmd = ["make", "run", "ACCEL=cuda12", f"WORKDIR={workdir}"]
  rc, out, wall, timed_out = run(cmd, args.budget_run)
  # stopped at its budget (75) is a result too: how far the main job got in that time
  return emit("make_run", rc == 0 or (timed_out and rc == STOPPED), wall_s=wall,
              returncode=rc, timed_out=timed_out, **metrics_tail(workdir),
              tail=None if rc == 0 else out[-1500:])


def bench_rows(check, script, sizes, benches, budget_s, python):
  """Runs a bench script and emits one line per JSON row of `benches`; a failure (or no
  row) emits its own line with the log's tail."""
  rc, out, wall, timed_out = run([python, script, *sizes], budget_s)
  rows = [r for r in json_lines(out) if r.get("bench") in benches]
  for r in rows:
    emit(check, True, **r)
  if rc != 0 or not rows:
    return emit(check, False, wall_s=wall, timed_out=timed_out, tail=out[-1500:])
  return True


def throughput(args, python):
  sizes = (["--variants", "tiny/2", "--batch", "2", "--dtype", "float32", "--steps", "1"]
           if args.cpu_dry_run else
           ["--variants", "S/2,B/2", "--batch", "256", "--dtype", "bfloat16", "--steps", "20"])
  return bench_rows("throughput", "bench/throughput/train_throughput.py", sizes,
                    ("train_throughput",), 150, python)


def seeds(args, python):
  sizes = (["--data", "digits", "--ks", "1,2", "--steps", "2", "--repeats", "1",
            "--family-steps", "0"] if args.cpu_dry_run else
           ["--data", "digits", "--ks", "1,8", "--steps", "40", "--repeats", "3",
            "--family-steps", "0"])
  if args.data_dir:
    sizes += ["--data-dir", args.data_dir]
  return bench_rows("seeds", "bench/seed_throughput.py", sizes,
                    ("seed_throughput", "seed_family"), 90, python)


def cifar10(args, python):
  out_dir = os.path.join(args.out, "cifar10")
  sizes = (["--runlocal", "--allow_cpu", "--steps", "4", "--ft", "2", "--num", "16",
            "--rows", "head_grad"] if args.cpu_dry_run else
           ["--steps", "1000", "--ft", "200", "--num", "1000"])
  if args.data_dir:
    sizes += ["--data_dir", args.data_dir]
  rc, out, wall, timed_out = run([python, "bench/throughput/cifar10_short.py", "--out", out_dir, *sizes],
                                 args.budget_cifar)
  record = {}
  if os.path.exists(os.path.join(out_dir, "record.json")):
    record = json.load(open(os.path.join(out_dir, "record.json"), encoding="utf-8"))
  return emit("cifar10", rc == 0 and bool(record.get("rows")), wall_s=wall,
              timed_out=timed_out, **record, tail=None if rc == 0 else out[-1500:])


CHECKS = {"install": install, "backend": backend, "make_run": make_run,
          "throughput": throughput, "seeds": seeds, "cifar10": cifar10}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, help="a new folder for the runs' workdirs")
  parser.add_argument("--cpu-dry-run", action="store_true",
                      help="every step at tiny sizes on the CPU: a check of this script")
  parser.add_argument("--budget_run", type=int, default=150, help="seconds for make_run")
  parser.add_argument("--budget_cifar", type=int, default=180, help="seconds for cifar10")
  parser.add_argument("--data_dir", default=None, help="TFDS data dir (default: TFDS's own)")
  parser.add_argument("--checks", default=",".join(CHECKS),
                      help=f"which of {','.join(CHECKS)} to run, in that order")
  args = parser.parse_args()
  unknown = set(args.checks.split(",")) - set(CHECKS)
  if unknown:
    parser.error(f"--checks: unknown {sorted(unknown)}; use some of {','.join(CHECKS)}")
  if os.path.exists(args.out) and os.listdir(args.out):
    sys.exit(f"--out {args.out} is not empty: give a new folder (nothing there was changed).")
  os.makedirs(args.out, exist_ok=True)
  ok = True
  for name in (c for c in CHECKS if c in args.checks.split(",")):
    # the dry run installs nothing: this interpreter's JAX stands in for the venv's
    python = VENV_PY if os.path.exists(VENV_PY) and not args.cpu_dry_run else sys.executable
    ok &= CHECKS[name](args, python)
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
