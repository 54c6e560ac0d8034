"""Shared test set-up: a persistent compilation cache so reruns skip XLA compiles."""
import os
import sys

import jax
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # so tests can import configs/ like the scripts do

jax.config.update("jax_compilation_cache_dir", os.path.join(ROOT, ".jax_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  """One TFDS data dir for the whole session: the builders prepare once."""
  return str(tmp_path_factory.mktemp("tfds"))


def pytest_collection_modifyitems(items):
  """Whole-loop tests first: they are the long ones (up to ~2 minutes each), so under
  pytest-xdist the run ends on short unit tests and neither worker waits idle on the
  other's last long test. Every worker collects the same order, as xdist requires."""
  items.sort(key=lambda item: item.get_closest_marker("loop") is None)
