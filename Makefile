# `make run`: the main job on the embedded default; `make test`: the test suite.
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/default
export JAX_COMPILATION_CACHE_DIR ?= $(CURDIR)/.jax_cache

.PHONY: run test bench clean

$(VENV)/.installed: setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

run: $(VENV)/.installed
	$(PY) scripts/train.py --config configs/default.py --workdir $(WORKDIR)

test: $(VENV)/.installed
	$(PY) -m pytest -q tests

# dit_jax against the PyTorch DiT (bench/torch_vs_jax.py); BENCH_ARGS=--quick for a smoke run
BENCH_ARGS ?=
$(VENV)/.bench: $(VENV)/.installed
	$(PY) -m pip install -q torch==2.13.0
	touch $@

bench: $(VENV)/.bench
	$(PY) bench/torch_vs_jax.py $(BENCH_ARGS)

clean:
	rm -rf .jax_cache
