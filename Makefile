# ballast: the two commands.
#   make demo    boot a guest under ballast, cut its memory limit, show the reclaim
#   make test    unit tests, a few seconds of each fuzz target, then every end-to-end scenario
#   make fuzz    every fuzz target for FUZZ_SECONDS each (default 600), with a table of results
#   make images  fetch the Debian kernel and busybox, build the base images
#   make bench   the benchmarks against QEMU's microvm (boot, then block reads)
# On a machine without hardware virtualisation the guests boot inside an L1 test
# host under QEMU's TCG with nested SVM (tests/harness/run-scenario.sh says which).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
# tmux: the tests of `ballast top` run it in a real terminal. g++: libFuzzer (libfuzzer-sys
# builds it from C++ source) for the fuzz targets.
APT_PACKAGES := busybox-static cpio e2fsprogs openssl tmux g++
IMAGES := target/images

.PHONY: all demo test unit-test fuzz-smoke fuzz e2e images ballast deps bench bench-boot bench-block
all: test

# Debian packages, installed only when missing (CI runs as root on a fresh machine).
deps:
	@. resources/lib.sh && ensure_apt $(APT_PACKAGES)

# The static ballast (and ballast-agent) that go into images.
ballast: deps
	@tests/harness/build-ballast.sh

images: deps
	@resources/build-guest-initramfs.sh -o $(IMAGES)/guest.cpio.gz
	@tests/harness/build-l1-initramfs.sh -o $(IMAGES)/l1.cpio.gz
	@eval "$$(resources/fetch.sh)" && echo "kernel: $$BALLAST_KERNEL" && \
		echo "images: $(IMAGES)/guest.cpio.gz $(IMAGES)/l1.cpio.gz (bases cached in $${BALLAST_CACHE:-$$HOME/.cache/ballast}/images)"

demo: deps ballast images
	@tests/harness/run-scenario.sh --stream tests/scenarios/demo

test: unit-test fuzz-smoke e2e

# nextest when installed (doc tests then run apart: nextest does not run them).
unit-test: deps
	@if cargo nextest --version >/dev/null 2>&1; then \
		cargo nextest run --workspace && cargo test --workspace --doc; \
	else \
		cargo test --workspace; \
	fi

# Each fuzz target (fuzz/fuzz_targets/) for a few seconds from its seed corpus: a crash, or a
# run of the event loop that does not return, fails the build. libFuzzer on the stable toolchain.
FUZZ_SMOKE_SECONDS ?= 5
fuzz-smoke: deps
	@fuzz/run.sh $(FUZZ_SMOKE_SECONDS)

FUZZ_SECONDS ?= 600
fuzz: deps
	@fuzz/run.sh $(FUZZ_SECONDS)

# One scenario at a time, its console log path and mode printed (--nocapture).
e2e: deps ballast images
	BALLAST_E2E=1 cargo test -p ballast-e2e --test e2e -- --nocapture --test-threads=1

# Side by side with QEMU in the same environment; each prints a markdown table.
bench: bench-boot bench-block

bench-boot: deps
	@tests/bench/boot.sh

bench-block: deps
	@tests/bench/block.sh
