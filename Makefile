# dydnn: the two commands a new user needs are `make demo` and `make test`.
# Each installs what is missing (Debian packages, the venv, the build) and is idempotent.

SHELL := /bin/bash
PYTHON_SYS := /usr/bin/python3
VENV := .venv
PY := $(VENV)/bin/python
BUILD := build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

# Debian bookworm packages the project builds, tests and runs with.
DEBIAN_PACKAGES := g++ cmake ninja-build ccache make \
  libtorch-dev python3-torch python3-torchvision pybind11-dev libeigen3-dev catch2 libfmt-dev libgloo-dev \
  python3-dev python3-venv python3-pip python3-setuptools python3-wheel python3-numpy python3-pytest \
  python3-matplotlib python3-tqdm python3-nbclient python3-nbformat python3-ipykernel zlib1g-dev \
  dataset-fashion-mnist

.PHONY: demo test bench docs deps venv build python clean help

help:
	@echo "make demo   - set up everything, then run the demo on Fashion-MNIST"
	@echo "make test   - set up everything, then run all tests (ctest + pytest)"
	@echo "make bench  - run the benchmarks (results in $(BUILD)/bench/)"
	@echo "make docs   - regenerate the connectivity mask pictures in docs/"

# apt-get only when a package is missing, so a second run is instant.
deps:
	@missing=$$(for p in $(DEBIAN_PACKAGES); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "[dydnn] installing Debian packages:" $$missing; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(PY): | deps
	$(PYTHON_SYS) -m venv --system-site-packages $(VENV)

venv: $(PY)

$(BUILD)/build.ninja: CMakeLists.txt | deps
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE=$(PYTHON_SYS) -DPython_EXECUTABLE=$(PYTHON_SYS) $(CMAKE_FLAGS)

build: $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

# Editable install: the extension is built into python/dydnn, so rebuilds are seen at once.
$(VENV)/.dydnn-installed: pyproject.toml setup.py | $(PY) build
	$(PY) -m pip install --no-build-isolation --no-deps --disable-pip-version-check -q -e .
	touch $@

python: build $(VENV)/.dydnn-installed

demo: python
	$(PY) examples/demo.py

test: python
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
	$(PY) -m pytest tests/python -q

bench: python
	$(BUILD)/benchmarks/bench_dynamic_net --out $(BUILD)/bench --docs docs/kernels.md $(BENCH_ARGS)
	$(PY) benchmarks/bench_training.py --out $(BUILD)/bench --docs docs/training_benchmark.md

docs: python
	$(PY) docs/make_mask_pictures.py

clean:
	rm -rf $(BUILD) $(VENV) python/dydnn/_C*.so
