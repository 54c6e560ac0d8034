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

clean:
	rm -rf .jax_cache
