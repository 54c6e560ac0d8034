"""host_memory: XLA:CPU's per-call buffer is reused instead of faulted in again.

Counted in page faults (what the change removes), not timed; each case in a fresh
process, since glibc's arenas are fixed once JAX's threads have allocated.
"""
import json
import os
import subprocess
import sys

from dit_jax import host_memory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# a jitted call whose temporary (sin(x), 64 MB) exceeds what glibc serves from a
# thread's heap; prints the faults of each of its calls 31-50. The heap takes some calls
# to settle (a call's buffer can be taken before the last one's is freed): it grew to
# 597 MB in 20 calls and stayed there through 60, faulting no more after call 20; on a
# slower, busier run two of calls 31-40 still faulted their buffer in, so the test
# reads the typical (median) call, not the sum.
PROBE = """
import json, resource, sys
sys.path.insert(0, {root!r})
from dit_jax import host_memory
applied = host_memory.keep_freed_memory()
import jax, jax.numpy as jnp
f = jax.jit(lambda x, w: (jnp.sin(x) @ w).sum())
x, w = jnp.ones((262144, 64)), jnp.ones((64, 64))
faults = []
for _ in range(50):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  f(x, w).block_until_ready()
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({{"applied": applied, "faults": faults[30:]}}))
"""


def _probe(**env):
  out = subprocess.run([sys.executable, "-c", PROBE.format(root=ROOT)], check=True,
                       capture_output=True, text=True, env=dict(os.environ, **env))
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_per_call_buffer_is_reused_not_faulted_in_again():
  kept, plain = _probe(), _probe(DIT_JAX_MALLOC="system")
  assert kept["applied"] and not plain["applied"]  # the project runs on Linux with glibc
  pages = 64 * 2 ** 20 // 4096  # the buffer's pages
  median = lambda v: sorted(v)[len(v) // 2]
  assert median(plain["faults"]) > 0.9 * pages  # glibc maps and unmaps it every call
  assert median(kept["faults"]) < 0.1 * pages  # reused


def test_opt_out_and_no_glibc_leave_malloc_alone(monkeypatch):
  monkeypatch.setenv("DIT_JAX_MALLOC", "system")
  assert host_memory.keep_freed_memory() is False
