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
