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
	# compat mode: a plain .pth with the checkout (PYTHONPATH can shadow it); PYTHONWARNINGS
	# hides setuptools' "compat editable mode will be removed" banner
	PYTHONWARNINGS=ignore $(PIP) install --quiet -e ".[dev,bench]" --config-settings editable_mode=compat
	# spikingjelly (a make bench peer) only with --no-deps: its metadata pulls torchvision and
	# torchaudio, which would replace the CPU torch; it imports only loguru (in the bench extra)
	$(PIP) install --quiet --no-deps "spikingjelly==2.0.0"
	touch $(STAMP)

venv: $(STAMP)

# The main job on the bundled example: compile, inspect, run on the chip runtime, verify.
demo: $(STAMP)
	@mkdir -p out
	$(VENV)/bin/snnc compile examples/digits/model.onnx -o out/chip.bin --calib digits
	$(VENV)/bin/snnc inspect out/chip.bin
	$(VENV)/bin/snnrun out/chip.bin --data digits --check
	$(VENV)/bin/snnc verify examples/digits/model.onnx out/chip.bin --data digits
	@echo ""
	@echo "What next (docs/user-guide.md):"
	@echo "  device noise:   $(VENV)/bin/snnrun out/chip.bin --mismatch 0.1,0.3 --report out/noise --plots"
	@echo "  attacks:        $(VENV)/bin/snnrun out/chip.bin --attack fgsm --eps 4/255,8/255 --report out/attack --plots"
	@echo "  paper tables:   $(VENV)/bin/snnrun compare --model examples/digits/model.onnx --bits 8,4 --report out/compare --plots"
	@echo "  your own model: docs/training.md (train, QAT, export) -> snnc compile model.onnx -o chip.bin"

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
