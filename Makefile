# Set-up is idempotent: each step checks before it installs.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
DEB_PACKAGES := python3-venv espeak-ng sox mecab mecab-naist-jdic chromium flite festival festvox-kallpc16k \
	festvox-kdlpc16k festvox-us-slt-hts  # chromium: the web page's browser test; flite, festival: the mini corpus's
#	other voices; python3-venv: Debian's python3 makes no virtual environment without it (installed before .venv)
STAMP := $(VENV)/.installed
TORCH_INDEX ?=  # a package index for torch alone (e.g. PyTorch's CPU-only one); empty: pip's own

.PHONY: setup debs test test-slow test-all demo gpu-check fetch-wheels

setup: $(STAMP) debs
	$(VENV)/bin/llm-srt setup

$(STAMP): pyproject.toml constraints.txt | debs
	test -x $(PIP) || python3 -m venv $(VENV)  # pip, not python: a venv made without ensurepip has python alone
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0 $(if $(strip $(TORCH_INDEX)),--index-url $(strip $(TORCH_INDEX)))
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# A missing package apt knows is installed (after apt-get update); one apt does not know (Ubuntu has no chromium) is
# skipped and said, and has the lists updated only where they are empty (a fresh image), not on every make test and
# make demo (sudo asked each time).
APT_LISTS ?= /var/lib/apt/lists
debs:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  apt_knows() { for p in $$missing; do apt-cache show $$p >/dev/null 2>&1 && printf ' %s' $$p; done; }; \
	  known=$$(apt_knows); \
	  if [ -n "$$known" ] || ! ls $(APT_LISTS) 2>/dev/null | grep -q '_Packages'; then \
	    $$SUDO apt-get update -qq; known=$$(apt_knows); fi; \
	  for p in $$missing; do case " $$known " in *" $$p "*) ;; \
	    *) echo "$$p: no such package in this system's apt sources (Ubuntu names Debian's chromium chromium-browser);" \
	      "skipped: the tests that need it are skipped or fail";; esac; done; \
	  if [ -n "$$known" ]; then echo "installing Debian packages:$$known"; \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$known >/dev/null; fi; \
	fi

# one test worker per core and one more (at most 4: each may load the embedded models), one thread each, the longest
# tests first (tests/conftest.py): a third of the time a worker waits on its subprocesses' start-up or a test's own
# timeouts, so 2 workers kept 2 cores 137% busy; 3 took make test from 682 s to 610 s here (2026-12-05)
TEST_WORKERS ?= $(shell echo $$(( $$(nproc 2>/dev/null || echo 1) + 1 )))
PYTEST_XDIST := -n $(TEST_WORKERS) --maxprocesses 4
# a test that hangs (ranks waiting on a peer that never comes) fails after this long with every thread's stack, where
# it held CI until its 90-minute limit; the longest tests take ~2 min here, ~5 min on a busy machine
TEST_TIMEOUT_S ?= 900
SLOW_TIMEOUT_S ?= 1800
test: setup
	$(VENV)/bin/pytest -q $(PYTEST_XDIST) --timeout $(TEST_TIMEOUT_S)

# the heavy tier (tests marked slow: multi-process matrices, the embedded models at full size, COMET's environment)
test-slow: setup  # one worker per core: its tests are mostly several processes each
	$(VENV)/bin/pytest -q -n auto --maxprocesses 4 -m slow --timeout $(SLOW_TIMEOUT_S)

test-all: setup
	$(VENV)/bin/pytest -q $(PYTEST_XDIST) -m '' --timeout $(SLOW_TIMEOUT_S)

DEMO_ARGS ?=  # e.g. make demo DEMO_ARGS="--dtype bfloat16" (CPUs with AMX: see README)
demo: setup
	$(VENV)/bin/llm-srt demo $(DEMO_ARGS)

# The prepared GPU check (scripts/gpu_check.py): CUDA tests, a tiny curriculum + kill/resume + translate + evaluate,
# and the paper-shape bench, in <= 8 minutes; report in $(OUT). On a bare GPU machine the wheels of .whl/ are
# installed first (make fetch-wheels, here). DEVICE=auto takes the GPU torch sees, and fails (at env, then stops)
# where nvidia-smi is on PATH but torch sees no GPU; `make gpu-check DEVICE=cpu` is the CPU rehearsal: the same steps
# here with tiny shapes. make exits 2 for any failure: the last line says the check's own status (0 passed, 1 FAILED,
# 2 incomplete, 128+N stopped by signal N), which scripts/gpu-check.sh, run directly, exits with.
DEVICE ?= auto
OUT ?= runs/gpu-check
GPU_CHECK_ARGS ?=
gpu-check:
	@if [ -x $(PY) ]; then export GPU_PYTHON=$(PY) USE_WHEELS=0; fi; \
	scripts/gpu-check.sh $(OUT) $(DEVICE) $(GPU_CHECK_ARGS) && exit 0; rc=$$?; \
	case $$rc in 1) what=FAILED;; 2) what=incomplete;; *) what="no outcome: stopped; see $(OUT)/report.md";; esac; \
	echo "gpu-check: exit $$rc ($$what); make itself exits 2 for any failure" >&2; exit $$rc

fetch-wheels:
	$(if $(wildcard $(PY)),$(PY),python3) scripts/gpu_check.py fetch-wheels
