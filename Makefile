# amulet_native - the README's commands.
#
#   make demo      decode sample images, print time per image vs Pillow and OpenCV
#   make test      run the whole test suite (C unit tests, pytest, mypy)
#   make bench     pytest-benchmark suites against named peers -> benchmarks/RESULTS.md
#   make sanitize  rebuild with ASan+UBSan in build/asan and run the test suite there (not the leak loops)
#   make serve     the reference system: Redis, the API (WORKERS=2), a job worker, Streamlit; Ctrl-C stops all
#   make fuzz      build the libFuzzer targets (decode, incremental) and fuzz for FUZZ_SECONDS
#
# Every target installs what it is missing first: Debian -dev packages (apt-get,
# as root or via sudo), a .venv, and the package with its extras.

PYTHON ?= python3
VENV   := .venv
VPY    := $(VENV)/bin/python
PIP    := $(VPY) -m pip
DEB_PKGS := gcc make pkg-config libjpeg62-turbo-dev libpng-dev zlib1g-dev libturbojpeg0 redis-server prometheus hey
# the reference system's browser test (issue 14)
DEB_PKGS += chromium chromium-driver
CORPUS ?= $(abspath $(or $(AMULET_CORPUS),../shared/corpus))
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
FUZZ_SECONDS ?= 120

export AMULET_CORPUS := $(CORPUS)

.PHONY: setup system build demo test test-c bench sanitize fuzz lint clean serve loadtest

setup: build

system:
	@missing=""; for p in $(DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "make: installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

$(VPY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.deps: pyproject.toml | $(VPY)
	$(PIP) install -q --upgrade pip "setuptools>=77" wheel "numpy>=2.0"
	$(PIP) install -q --no-build-isolation -e ".[test,bench]"
	@touch $@

build: system $(VENV)/.deps
	@$(VPY) setup.py -q build_ext --inplace 2>&1 | grep -v -e "SetuptoolsDeprecationWarning" -e "^\s*$$" || true
	@$(VPY) -c "import amulet_native" || (echo "make: extension failed to build" && exit 1)

demo: build
	$(VPY) python/demo.py

serve: build
	@$(VPY) -c "import fastapi, uvicorn, streamlit, rq, redis" 2>/dev/null || \
	  $(PIP) install -q --no-build-isolation -e ".[fastapi,streamlit,jobs]"
	$(VPY) python/serve.py

loadtest: build
	$(VPY) benchmarks/loadtest.py

test-c: system
	$(MAKE) -C tests/c run

test: build test-c
	$(VPY) -m pytest -q
	$(VPY) -m mypy

bench: build
	$(VPY) -m pytest benchmarks -q --benchmark-only --benchmark-json=.benchmarks/latest.json
	$(VPY) benchmarks/report.py .benchmarks/latest.json benchmarks/RESULTS.md

ASAN_DIR := build/asan
LIBASAN  := $(shell gcc -print-file-name=libasan.so)
sanitize: build
	rm -rf $(ASAN_DIR) && mkdir -p $(ASAN_DIR)
	cp -r amulet_native csrc tests setup.py pyproject.toml $(ASAN_DIR)/
	rm -rf $(ASAN_DIR)/amulet_native/*.so $(ASAN_DIR)/tests/fuzz/corpus* $(ASAN_DIR)/tests/fuzz/out*
	cd $(ASAN_DIR) && AMULET_NATIVE_SANITIZE=1 ../../$(VPY) setup.py -q build_ext --inplace 2>&1 | grep -iE "warning|error" || true
	cd $(ASAN_DIR) && LD_PRELOAD=$(LIBASAN) PYTHONMALLOC=malloc \
	  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ../../$(VPY) -m pytest -q -p no:cacheprovider -m "not slow or sanitize" tests \
	    --ignore=tests/test_leaks.py  # RSS/heap readings mean nothing under ASan's allocator

fuzz: system
	@command -v clang >/dev/null || { echo "make: installing clang (libFuzzer)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq clang >/dev/null; }
	@# FUZZ_SECONDS is shared: half for whole-file decode, half for the incremental decoder.
	$(MAKE) -C tests/fuzz run SECONDS=$$(( ($(FUZZ_SECONDS) + 1) / 2 ))
	$(MAKE) -C tests/fuzz run-incr SECONDS=$$(( ($(FUZZ_SECONDS) + 1) / 2 ))

lint: build
	$(VPY) -m ruff check amulet_native tests benchmarks python
	$(VPY) -m mypy

clean:
	rm -rf build *.egg-info amulet_native/*.so .pytest_cache .mypy_cache
	$(MAKE) -C tests/c clean

# HTTP integration benchmarks (issue 13): hey against uvicorn, bare vs install() vs the
# slowapi/instrumentator stack -> benchmarks/results/http.md, raw runs in benchmarks/runs/
.PHONY: bench-http
bench-http: build
	$(VPY) benchmarks/http/run.py
