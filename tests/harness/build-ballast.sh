#!/usr/bin/env bash
# Builds the static binaries that go into images (the L1 test host and the guest
# carry no C library). Prints shell assignments:  eval "$(tests/harness/build-ballast.sh)"
#   BALLAST_BIN        target/x86_64-unknown-linux-gnu/release/ballast
#   BALLAST_AGENT_BIN  .../ballast-agent, empty while the guest-agent crate has no binary
# and, beside them, the test agents a scenario may run instead of ballast-agent (its
# `agent` file names one): hostile-agent (tests/src/bin/hostile-agent.rs).
# The explicit --target keeps +crt-static away from host builds and tests
# (RUSTFLAGS then apply to the target artifacts only, not to build scripts).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"

target=x86_64-unknown-linux-gnu
out="$repo/target/$target/release"
pkgs=(-p ballast -p ballast-e2e)
agent=''
if [ -f guest-agent/src/main.rs ] || [ -f guest-agent/src/bin/ballast-agent.rs ]; then
    pkgs+=(-p ballast-agent)
    agent="$out/ballast-agent"
fi
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --release --target "$target" "${pkgs[@]}" >&2
printf 'BALLAST_BIN=%q\nBALLAST_AGENT_BIN=%q\n' "$out/ballast" "$agent"
