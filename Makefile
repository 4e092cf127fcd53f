# Two commands for a fresh machine (see README.md):
#   make demo   set everything up, then run the main job
#   make test   set everything up, then lint and run the test suite
# Both create (or reuse) a virtual environment in .venv inside the repository.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch with the torchvision built for it (mmpretrain imports torchvision;
# PyPI has no torchvision for a CPU-only torch build), here and in CI; on a
# GPU machine install your CUDA torch and torchvision into the venv first
# and run `make TORCH_SPEC= install`.
TORCH_SPEC ?= torch==2.9.1 torchvision==0.24.1
PYTEST_ARGS ?=
DEMO_ARGS ?=

STAMP := $(VENV)/.installed

.PHONY: install test lint pytest demo clean-venv

install: $(STAMP)

$(STAMP): setup.py requirements/runtime.txt requirements/mmcv.txt requirements/tests.txt requirements/mask2former.txt requirements/mmpretrain.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade 'pip<26' wheel
	test -z "$(TORCH_SPEC)" || $(PIP) install $(TORCH_SPEC)
	# mmcv 2.1.0 setup.py needs pkg_resources (setuptools < 70); torch only
	# needs newer setuptools to build its own extensions, which we never do.
	$(PIP) install 'setuptools<70'
	# compiled against the torch above; never a cached wheel built against
	# another torch
	$(PIP) install --no-cache-dir --no-build-isolation -r requirements/mmcv.txt
	# mask2former.txt: mmdet for MMSeg's Mask2Former/MaskFormer heads;
	# mmpretrain.txt: mmpretrain for its ConvNeXt/PoolFormer backbones; so
	# that the tests cover them (optional for users: pip install -e
	# .[mask2former,mmpretrain])
	$(PIP) install -r requirements/runtime.txt -r requirements/tests.txt -r requirements/mask2former.txt -r requirements/mmpretrain.txt
	$(PIP) install --no-build-isolation --no-deps -e .
	$(PY) -c "import mmcv.ops, mmdet.models, mmpretrain.models, mmseg.models, mmseg_resensemble"
	touch $@

lint: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/pre-commit run --all-files --show-diff-on-failure

# one worker per core (pytest-xdist), one thread per worker: the tests are
# small, and threads would only compete with the other workers
PYTEST_WORKERS ?= auto

pytest: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest tests -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

test: lint pytest

demo: $(STAMP)
	$(PY) tools/demo.py $(DEMO_ARGS)

clean-venv:
	rm -rf $(VENV)
