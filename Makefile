# dydnn: the two commands a new user needs are `make demo` and `make test`.
# Each installs what is missing (Debian packages, the venv, the build) and is idempotent.

SHELL := /bin/bash
PYTHON_SYS := /usr/bin/python3
VENV := .venv
PY := $(VENV)/bin/python
BUILD := build
# The sanitized clang build of the fuzz harnesses (make fuzz, and the corpus replay in make test).
FUZZ_BUILD := build-fuzz
FUZZ_SECONDS ?= 600
FASHION := /usr/share/datasets/fashion-mnist
# Where examples/demo.py writes (its --quick mode, DYDNN_DEMO_QUICK=1, writes to a subdirectory).
DEMO_DIR := $(if $(filter-out 0,$(DYDNN_DEMO_QUICK)),$(BUILD)/demo/quick,$(BUILD)/demo)
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

# Debian bookworm packages the project builds, tests and runs with.
DEBIAN_PACKAGES := g++ cmake ninja-build ccache make \
  libtorch-dev python3-torch python3-torchvision pybind11-dev libeigen3-dev catch2 libfmt-dev libgloo-dev \
  python3-dev python3-venv python3-pip python3-setuptools python3-wheel python3-numpy python3-pytest \
  python3-matplotlib python3-tqdm python3-nbclient python3-nbformat python3-ipykernel zlib1g-dev \
  python3-onnx clang libclang-rt-14-dev dataset-fashion-mnist iproute2 libdnnl-dev

.PHONY: demo test bench docs deps venv build python fuzz-build fuzz-replay fuzz clean help

help:
	@echo "make demo   - set up everything, then run the demo on Fashion-MNIST"
	@echo "make test   - set up everything, then run all tests (ctest + pytest)"
	@echo "make bench  - run the benchmarks (results in $(BUILD)/bench/)"
	@echo "make docs   - regenerate the connectivity mask pictures in docs/"
	@echo "make fuzz   - fuzz the model-file loader under ASan+UBSan for FUZZ_SECONDS (default 600)"

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
	@echo; echo "== The C++ deploy example on the model file the demo wrote ($(DEMO_DIR)/model.dydnn)"
	$(BUILD)/examples/cpp/deploy/dydnn_deploy $(DEMO_DIR)/model.dydnn --config AB --limit 10 --threads 1 \
	  --images $(FASHION)/t10k-images-idx3-ubyte.gz --labels $(FASHION)/t10k-labels-idx1-ubyte.gz
	@echo; echo "== The runtime manager on this machine: a stepping latency target and a competing process"
	$(PY) examples/runtime_demo.py --model $(DEMO_DIR)/model.dydnn $(if $(filter-out 0,$(DYDNN_DEMO_QUICK)),--quick,)

test: python fuzz-replay
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
	$(PY) -m pytest tests/python -q

# Everything compiled by clang with ASan+UBSan and libFuzzer's coverage (fuzz/CMakeLists.txt).
$(FUZZ_BUILD)/build.ninja: CMakeLists.txt fuzz/CMakeLists.txt | deps
	cmake -S . -B $(FUZZ_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
	  -DDYDNN_FUZZ=ON -DDYDNN_BUILD_TESTS=OFF -DDYDNN_BUILD_PYTHON=OFF -DDYDNN_BUILD_EXAMPLES=OFF \
	  -DDYDNN_BUILD_BENCHMARKS=OFF -DDYDNN_INSTALL=OFF

fuzz-build: $(FUZZ_BUILD)/build.ninja
	cmake --build $(FUZZ_BUILD) -j $(JOBS) --target fuzz_artifact

# The committed seed corpus, run once under the sanitizers (part of make test).
fuzz-replay: fuzz-build
	cd $(FUZZ_BUILD) && ctest --output-on-failure -L fuzz

# A real fuzzing run: new inputs go to $(FUZZ_BUILD)/corpus, crashes to $(FUZZ_BUILD)/findings.
fuzz: fuzz-build
	mkdir -p $(FUZZ_BUILD)/corpus $(FUZZ_BUILD)/findings
	cd $(FUZZ_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  ./fuzz/fuzz_artifact -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=4096 -malloc_limit_mb=2048 \
	  -print_final_stats=1 -artifact_prefix=findings/ corpus ../fuzz/corpus/artifact

bench: python
	$(BUILD)/benchmarks/bench_dynamic_net --out $(BUILD)/bench --docs docs/kernels.md $(BENCH_ARGS)
	$(BUILD)/benchmarks/bench_selector --out $(BUILD)/bench --docs docs/selector_benchmark.md
	$(BUILD)/benchmarks/bench_governors --out $(BUILD)/bench --docs docs/governors_benchmark.md
	$(PY) benchmarks/bench_training.py --out $(BUILD)/bench --docs docs/training_benchmark.md
	$(PY) benchmarks/bench_export.py --out $(BUILD)/bench --docs docs/export_benchmark.md
	$(PY) benchmarks/bench_dist.py --out $(BUILD)/bench --docs docs
	$(PY) benchmarks/bench_depth.py --out $(BUILD)/bench --docs docs/depth_benchmark.md

docs: python
	$(PY) docs/make_mask_pictures.py

clean:
	rm -rf $(BUILD) $(FUZZ_BUILD) $(VENV) python/dydnn/_C*.so
