"""dit_jax against a PyTorch DiT of the same shape and weights, timed side by side.

  make bench                                    # torch installed, all rows, 5 rounds
  python bench/vs_torch/torch_vs_jax.py                  # the same (torch==2.13.0 in the venv)
  python bench/vs_torch/torch_vs_jax.py --quick          # a smoke run: small rows, 2 rounds
  python bench/vs_torch/torch_vs_jax.py --rows tiny2_8x8x1_train_b32 --rounds 7

For each row it first checks, in a process holding both stacks, that the PyTorch model
(bench/vs_torch/torch_reference.py) has dit_jax's parameter count and, with the same weights, its
outputs (1e-5), loss, gradients, AdamW+EMA steps (bench/vs_torch/equivalence.py). Then one
process per stack (`jax`: dit_jax's own jitted train step, sampler or forward; `eager`
and `compile`: PyTorch eager and torch.compile), each pinned to the same `--threads`
CPUs, compiles and warms up (not timed), and the stacks take turns: each round asks
every process for the same number of calls, in an order rotated from round to round
so that drift in the machine's speed hits every stack alike. Per round, `speedup_vs_X`
is X's ms per call over dit_jax's (> 1: dit_jax faster); a row prints their medians,
and the last line checks the issue's targets (train rows: >= 1.2 against eager and
>= 1.0 against compile; sampling >= 1.2 against eager).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from bench.vs_torch.rows import QUICK_ROWS, ROWS  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
TARGETS = {"train": {"eager": 1.2, "compile": 1.0}, "sample": {"eager": 1.2}}
# forward and backward of a dense network: about 3 forward passes of matmul FLOPs
PASSES = {"train": 3, "forward": 1}


class Worker:
  """One stack's process: started, compiled, then timed line by line."""

  def __init__(self, stack, row, params, threads, log):
    cmd = [sys.executable, os.path.join(HERE, "stack_worker.py"), "--stack", stack,
           "--row", json.dumps(row), "--params", params, "--threads", str(threads)]
    self.stack, self.log = stack, log
    self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=open(log, "w"), text=True)
    self.ready = self._read()

  def _read(self):
    line = self.proc.stdout.readline()
    if not line:
      self.proc.wait()
      with open(self.log) as f:
        tail = f.read()[-3000:]
      raise RuntimeError(f"{self.stack} worker ended (rc {self.proc.returncode}):\n{tail}")
    return json.loads(line)

  def seconds(self, calls):
    """(wall seconds, CPU seconds) of `calls` calls."""
    self.proc.stdin.write(f"{calls}\n")
    self.proc.stdin.flush()
    out = self._read()
    return out["s"], out["cpu_s"]

  def close(self):
    self.proc.stdin.close()
    self.proc.wait(timeout=60)


def check(row, params, threads, log):
  """The equivalence check (asserts inside); writes the row's weights to `params`."""
  cmd = [sys.executable, os.path.join(HERE, "stack_worker.py"), "--stack", "check",
         "--row", json.dumps(row), "--params", params, "--threads", str(threads)]
  with open(log, "w") as err:
    done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
  if done.returncode:
    with open(log) as f:
      raise RuntimeError(f"equivalence check of {row['name']} failed:\n{f.read()[-3000:]}")
  return json.loads(done.stdout.strip().splitlines()[-1])


def summarize(row, checked, ready, ms, flops_per_image):
  """The row's JSON: ms per call by round, per-round speedups and their medians."""
  out = {"bench": "torch_vs_jax", "row": row["name"], "kind": row["kind"],
         "batch": row["batch"], "params": checked["params"], "rounds": len(ms["jax"]),
         "ms": {s: [round(v, 3) for v in ms[s]] for s in ms},
         "median_ms": {s: round(float(np.median(ms[s])), 3) for s in ms},
         "compile_s": {s: ready[s]["compile_s"] for s in ready},
         "matmul_gflops": {s: ready[s]["matmul_gflops"] for s in ready},
         "check": {k: v for k, v in checked.items() if k not in ("row", "params")}}
  for s in ms:
    if s != "jax":
      ratios = [t / j for t, j in zip(ms[s], ms["jax"])]
      out[f"speedup_vs_{s}"] = [round(r, 3) for r in ratios]
      out[f"median_speedup_vs_{s}"] = round(float(np.median(ratios)), 3)
  passes = PASSES.get(row["kind"], row.get("steps", 1))
  work = passes * flops_per_image * row["batch"]
  out["matmul_peak_fraction"] = {
      s: round(work / (out["median_ms"][s] / 1e3) / 1e9 / out["matmul_gflops"][s], 3)
      for s in ms}
  return out


def calls_per_round(workers, target_s):
  """Calls per timed chunk: about target_s seconds of the fastest stack."""
  fastest = min(w.seconds(1)[0] for w in workers)
  return max(1, int(round(target_s / max(fastest, 1e-6))))


def run_row(row, stacks, rounds, target_s, threads, tmp):
  params = os.path.join(tmp, f"{row['name']}.npz")
  checked = check(row, params, threads, os.path.join(tmp, f"{row['name']}.check.log"))
  workers = []
  try:
    for s in stacks:  # one at a time, so no compile shares the CPUs with another
      workers.append(Worker(s, row, params, threads, os.path.join(tmp, f"{row['name']}.{s}.log")))
    calls = calls_per_round(workers, target_s)
    ms, cpu_ms = {s: [] for s in stacks}, {s: [] for s in stacks}
    for r in range(rounds):
      for w in workers[r % len(workers):] + workers[:r % len(workers)]:
        wall, cpu = w.seconds(calls)
        ms[w.stack].append(1e3 * wall / calls)
        cpu_ms[w.stack].append(1e3 * cpu / calls)
  finally:
    for w in workers:
      w.close()
  out = summarize(row, checked, {w.stack: w.ready for w in workers}, ms,
                  checked["flops_per_image"])
  out["calls_per_round"] = calls
  out["median_cpu_ms"] = {s: round(float(np.median(v)), 3) for s, v in cpu_ms.items()}
  return out


def targets_met(results):
  """Each row's target against each stack it has one for: met, and the median."""
  out = {}
  for res in results:
    for stack, least in TARGETS.get(res["kind"], {}).items():
      key = f"median_speedup_vs_{stack}"
      if key in res:
        out[f"{res['row']}/{stack}"] = {"median_speedup": res[key], "target": least,
                                        "met": res[key] >= least}
  return out


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--rows", default="all", help="comma-separated row names, or all")
  ap.add_argument("--stacks", default="jax,eager,compile")
  ap.add_argument("--rounds", type=int, default=5)
  ap.add_argument("--target_s", type=float, default=1.0, help="seconds per timed chunk")
  ap.add_argument("--threads", type=int, default=2)
  ap.add_argument("--quick", action="store_true", help="small rows, 2 rounds of ~0.2 s")
  ap.add_argument("--out", help="also write every row's JSON to this file")
  args = ap.parse_args()
  rows = QUICK_ROWS if args.quick else ROWS
  if args.rows != "all":
    rows = [r for r in ROWS + QUICK_ROWS if r["name"] in args.rows.split(",")]
  rounds, target_s = (2, 0.2) if args.quick else (args.rounds, args.target_s)
  stacks = args.stacks.split(",")
  assert stacks[0] == "jax", "speedups are against dit_jax: list jax first"
  results = []
  with tempfile.TemporaryDirectory(prefix="torch_vs_jax_") as tmp:
    for row in rows:
      results.append(run_row(row, stacks, rounds, target_s, args.threads, tmp))
      print(json.dumps(results[-1]), flush=True)
  summary = {"bench": "torch_vs_jax_summary", "threads": args.threads, "rounds": rounds,
             "targets": targets_met(results)}
  print(json.dumps(summary), flush=True)
  if args.out:
    with open(args.out, "w") as f:
      json.dump({"rows": results, "summary": summary}, f, indent=1)


if __name__ == "__main__":
  main()
