# The two commands a fresh machine needs:  `make demo`  and  `make test`.
# The venv's interpreter: any CPython >= 3.11 (`make PY=python3.12 test`). By default Debian's
# /usr/bin/python3 where it is 3.11 or newer with venv support: it is built with PGO and LTO and links
# libpython statically, and measured here `aovisor` runs the hello guest from start to exit ~15 % faster
# on it than on a default pyenv build (shared libpython, no PGO); that start-up is benchmarked against QEMU.
SYSTEM_PY := $(shell /usr/bin/python3 -c 'import sys, ensurepip; sys.exit(sys.version_info < (3, 11))' \
                2>/dev/null && echo /usr/bin/python3)
PY     ?= $(or $(SYSTEM_PY),python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
BUILD  := build

# Debian packages the tests and benchmarks use (command -> package).
SYSDEPS := gcc:gcc ld:binutils iasl:acpica-tools zstd:zstd dpkg-deb:dpkg qemu-system-x86_64:qemu-system-x86 \
           debootstrap:debootstrap mkfs.ext4:e2fsprogs busybox:busybox-static

.PHONY: demo test lint unit bench sysdeps venv lab-shell clean

venv: $(STAMP)
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

sysdeps:
	@missing=""; for dep in $(SYSDEPS); do cmd=$${dep%%:*}; pkg=$${dep##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || [ -x /usr/sbin/$$cmd ] || missing="$$missing $$pkg"; done; \
	  [ -f /usr/include/linux/kvm.h ] || missing="$$missing linux-libc-dev"; \
	  if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = 0 ]; then echo "installing:$$missing"; \
	      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	    else echo "missing Debian packages:$$missing (sudo apt-get install$$missing)"; exit 1; fi; fi

# Boot the built-in default Linux guest and show its output (in the nested lab where /dev/kvm cannot).
demo: venv sysdeps
	$(BIN)/python scripts/demo.py

LINT_DIRS := $(wildcard src tests guests bench lab scripts)

lint: venv
	$(BIN)/ruff check $(LINT_DIRS)
	$(BIN)/ruff format --check $(LINT_DIRS)
	$(BIN)/mypy

test: venv sysdeps lint
	$(BIN)/pytest -q

bench: venv sysdeps
	$(BIN)/python bench/run.py

lab-shell: venv sysdeps
	$(BIN)/python -m lab shell

clean:
	rm -rf $(BUILD) .pytest_cache .mypy_cache .ruff_cache
