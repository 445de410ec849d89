# The README's two commands: `make demo` and `make test`. Both set up a venv themselves; `make`
# alone only installs. The venv gets robustart with every extra plus the dev tools, at the exact
# versions of one tested stack (constraints/): STACK=torch-2.14 (default, in .venv) or
# STACK=torch-2.11 (the GPU machines' PyTorch, Triton and torchvision, in .venv-torch-2.11).
PYTHON ?= python3
STACK  ?= torch-2.14
VENV   ?= $(if $(filter torch-2.14,$(STACK)),.venv,.venv-$(STACK))
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONSTRAINTS := -c constraints/common.txt -c constraints/$(STACK).txt

# The shared ImageNet sample (one JPEG per class) used by the tests that need real
# ImageNet images; override with `make test ROBUSTART_IMAGENET_SAMPLE=/path`.
ROBUSTART_IMAGENET_SAMPLE ?= $(abspath ../shared/data/imagenet-sample)
export ROBUSTART_IMAGENET_SAMPLE
# Pillow-SIMD (an ImageNet-S decoder) cannot share a process with Pillow: it lives in its own
# folder, built once from source by `robustart imagenet-s setup`.
ROBUSTART_PILLOW_SIMD ?= $(abspath $(VENV))/pillow-simd
export ROBUSTART_PILLOW_SIMD

.DEFAULT_GOAL := install
.PHONY: demo test install clean

$(STAMP): pyproject.toml Makefile constraints/common.txt constraints/$(STACK).txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[all,dev]' $(CONSTRAINTS)
	# The reference attacks for tests and benchmarks; --no-deps: see pyproject.toml's dev extra.
	$(BIN)/python -m pip install -q --no-deps torchattacks==3.5.1
	$(BIN)/robustart imagenet-s setup || echo "warning: Pillow-SIMD did not build here; its decoder and tests are skipped"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/robustart eval --model efficientnet_lite0 --noise pgd

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf .venv .venv-torch-* *.egg-info .pytest_cache
