"""Where a sweep's wall time goes: XLA compiles, tracing and compilation-cache hits.

  JAX_COMPILATION_CACHE_DIR=$(mktemp -d) python bench/throughput/sweep_compile.py \
      --config configs/sweeps/prune_ratio.py:runlocal --workdir $(mktemp -d)/w
Runs the sweep in this process (as scripts/sweep.py does, cache settings included)
with a jax.monitoring listener and prints one JSON line: the wall time, the seconds
and count of XLA compiles, of tracing, and the compile time the persistent cache
saved. An empty cache directory measures a cold sweep; run it again on the same cache
with a new --workdir for a warm one.
"""
import argparse
import collections
import json
import os
import sys
import time

from jax import monitoring

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from dit_jax import cli  # noqa: E402
from dit_jax.study import sweep  # noqa: E402

EVENTS = {"compile": "/jax/core/compile/backend_compile_duration",
          "trace": "/jax/core/compile/jaxpr_trace_duration",
          "cache_saved": "/jax/compilation_cache/compile_time_saved_sec"}


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--config", required=True, help="a sweep file, optionally path.py:arg")
  ap.add_argument("--workdir", required=True, help="a new folder for the sweep")
  args = ap.parse_args()
  seconds, counts = collections.Counter(), collections.Counter()

  def listen(event, duration, **kwargs):
    seconds[event] += duration
    counts[event] += 1
  monitoring.register_event_duration_secs_listener(listen)
  from absl import flags  # cli.setup reads its own (absent) flags
  flags.FLAGS(sys.argv[:1])
  cli.setup()
  t0 = time.perf_counter()
  sweep.run_sweep(args.config, args.workdir)
  out = {"bench": "sweep_compile", "config": args.config,
         "wall_s": round(time.perf_counter() - t0, 1)}
  for name, event in EVENTS.items():
    out[f"{name}_s"] = round(seconds[event], 1)
    out[f"{name}_count"] = counts[event]
  print(json.dumps(out), flush=True)


if __name__ == "__main__":
  main()
