# snnc: every target bootstraps .venv by itself on a fresh machine.
# torch is installed first (a plain `torch` requirement would pull a multi-GB CUDA build).
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.snnc-installed
JOBS ?= 2

.PHONY: all venv demo test test-fast fuzz bench lint docs clean

all: test

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(STAMP): $(PY) setup.cfg pyproject.toml
	$(PIP) install --quiet "$(TORCH_SPEC)"
	$(PIP) install --quiet -e ".[dev,bench]" --config-settings editable_mode=compat
	touch $(STAMP)

venv: $(STAMP)

# The main job on the bundled example: compile, inspect, run on the chip runtime, verify.
demo: $(STAMP)
	@mkdir -p out
	$(VENV)/bin/snnc compile examples/digits/model.onnx -o out/chip.bin --calib digits
	$(VENV)/bin/snnc inspect out/chip.bin
	$(VENV)/bin/snnrun out/chip.bin --data digits --check
	$(VENV)/bin/snnc verify examples/digits/model.onnx out/chip.bin --data digits

test: $(STAMP)
	$(PY) -m pytest -n $(JOBS) --dist loadfile

test-fast: $(STAMP)
	$(PY) -m pytest -n $(JOBS) -m "not slow"

# The long fuzz profile (minutes): thousands of hostile chip.bin files, npz/IDX/CIFAR inputs and
# options (tests/fuzz; the short profile runs in `make test`).
fuzz: $(STAMP)
	SNNC_FUZZ=long $(PY) -m pytest -n $(JOBS) --dist loadfile tests/fuzz

bench: $(STAMP)
	$(PY) -m benchmarks

lint: $(STAMP)
	$(VENV)/bin/ruff check compiler runtime frontends tests benchmarks

docs: $(STAMP)
	$(PY) -m compiler.backend.binfmt --markdown > docs/binfmt.md

clean:
	rm -rf out build *.egg-info .pytest_cache
