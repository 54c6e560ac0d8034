"""One stack of the torch-vs-JAX bench in its own process: `jax`, `eager` or `compile`.

  python bench/vs_torch/stack_worker.py --stack jax --row '{"kind": "train", ...}' --params P.npz

Started by bench/vs_torch/torch_vs_jax.py, never by hand. It pins itself to `--threads` CPUs
before importing its stack (XLA sizes its thread pool from the CPUs it may run on, torch
from set_num_threads), builds and compiles the row's function, and prints one JSON line
(compile time, parameter count, the fp32 2048^2 matmul peak of its stack). Then each
line "N" on stdin runs the function N times and answers {"s": seconds}; EOF ends it.
The check (`--stack check`) loads both stacks in one process: it writes the row's
parameters to --params and asserts the two models agree before anything is timed.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

MATMUL_N = 2048


def pin_threads(n):
  """The first n CPUs this process may use; and the thread-count variables both read."""
  cpus = sorted(os.sched_getaffinity(0))[:n]
  os.sched_setaffinity(0, cpus)
  for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[var] = str(n)


def load_params(path):
  with np.load(path) as f:
    return {k: f[k] for k in f.files}


def serve(fn, finish, ready):
  """Prints `ready`, then runs fn N times (and `finish`) for each line "N" and answers
  the seconds.

  `cpu_s` (this process's CPU time, all threads) tells work from waiting: with other
  jobs on the cores the wall time grows while the CPU time mostly does not.
  """
  print(json.dumps(ready), flush=True)
  for line in sys.stdin:
    n = int(line)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n):
      fn()
    finish()
    print(json.dumps({"s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}),
          flush=True)


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--stack", required=True, choices=("jax", "eager", "compile", "check"))
  ap.add_argument("--row", required=True, help="the row's JSON (bench/vs_torch/rows.py)")
  ap.add_argument("--params", required=True, help=".npz of flattened dit_jax parameters")
  ap.add_argument("--threads", type=int, default=2)
  args = ap.parse_args()
  pin_threads(args.threads)
  row = json.loads(args.row)
  if args.stack == "check":
    from bench.vs_torch import equivalence  # noqa: PLC0415 (both stacks: only in this process)
    print(json.dumps(equivalence.check_row(row, args.params)), flush=True)
    return
  t0 = time.perf_counter()
  if args.stack == "jax":
    # as dit_jax's scripts start (cli.setup): before JAX runs anything
    from dit_jax import host_memory  # noqa: PLC0415
    host_memory.keep_freed_memory()
    from bench.vs_torch import jax_side as side  # noqa: PLC0415
    (fn, finish), count = side.runner(row, load_params(args.params)), side.num_params(row)
  else:
    from bench.vs_torch import torch_side as side  # noqa: PLC0415
    side.set_threads(args.threads)
    fn, count = side.runner(row, load_params(args.params), args.stack == "compile")
    finish = lambda: None  # torch on the CPU returns when its work is done
  compile_s = time.perf_counter() - t0
  ready = {"stack": args.stack, "compile_s": round(compile_s, 2), "params": count,
           "matmul_gflops": round(side.matmul_gflops(MATMUL_N), 1)}
  serve(fn, finish, ready)


if __name__ == "__main__":
  main()
