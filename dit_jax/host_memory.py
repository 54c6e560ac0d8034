"""Keeps freed host memory inside the process, so XLA:CPU stops page-faulting each step.

XLA:CPU allocates one temporary buffer per executable call for everything the step
keeps live (126 MB for the default model's train step at batch 128). glibc serves an
allocation that large with a fresh mmap and unmaps it on free, so every step
page-faults the whole buffer in again: 30,800 minor faults a step there, about a
quarter of the step's CPU time spent in the kernel zeroing pages. Served from the
heap and kept after free, the same buffer is reused: once the heap has settled (15
steps there, at 1.1 GB resident) no faults a step, and 1.3x less CPU time for that
step (S/2 at batch 32: 1.8 million faults and 5 s in the kernel a step, to none;
BENCHMARKS.md).

glibc decides where a thread allocates when the thread first allocates, so this must
run before JAX starts its threads (before its first computation): the scripts call it
through cli.setup(). Later it still keeps the main heap's memory, but XLA's threads
may already hold arenas that map large blocks. The cost: the process keeps its peak
heap instead of giving freed memory back to the OS. DIT_JAX_MALLOC=system leaves
glibc's defaults alone; other C libraries are left alone too.
"""
import ctypes
import ctypes.util
import os
import sys

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1  # -1: never give the heap's free top back to the OS
_M_MMAP_MAX = -4  # 0: never serve an allocation with its own mmap
_M_ARENA_MAX = -8  # 1: every thread allocates from the main heap, which can grow


def keep_freed_memory():
  """Sets glibc's malloc to keep freed memory for reuse; True if it was set."""
  if not sys.platform.startswith("linux") or os.environ.get("DIT_JAX_MALLOC") == "system":
    return False
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mallopt = libc.mallopt  # glibc's; musl has none
  except (OSError, AttributeError):
    return False
  # the arena limit first: with one arena, no thread maps a heap of its own
  settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1))
  return all(mallopt(param, value) == 1 for param, value in settings)
