#!/usr/bin/env bash
# Builds the fuzz targets with libFuzzer's coverage instrumentation on the stable toolchain
# (the flags cargo-fuzz passes, without its nightly-only sanitizers) and runs each for a while:
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]      (default: 60 s, every target)
# Seeds come from fuzz/corpus/TARGET (checked in); what a run finds goes to
# target/fuzz/corpus/TARGET, and crashes to target/fuzz/artifacts/TARGET/ (the script then
# exits non-zero; rerun one with target/fuzz/x86_64-unknown-linux-gnu/release/TARGET FILE).
# A run of the loop that does not return within 10 s counts as a crash (libFuzzer -timeout).
# Prints a table: executions, coverage (libFuzzer's cov: edges), corpus size, crashes.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
seconds=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=()
    for f in "$here"/fuzz_targets/*.rs; do targets+=("$(basename "$f" .rs)"); done
fi

target=x86_64-unknown-linux-gnu
export CARGO_TARGET_DIR="$repo/target/fuzz"
# The explicit --target keeps the instrumentation off build scripts and proc macros.
RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks" \
    cargo build --manifest-path "$here/Cargo.toml" --release --target "$target" \
    $(printf -- '--bin %s ' "${targets[@]}") >&2
bin="$CARGO_TARGET_DIR/$target/release"

failed=0
printf '| target | seconds | executions | exec/s | coverage (edges) | corpus | crashes |\n'
printf '|---|---|---|---|---|---|---|\n'
for t in "${targets[@]}"; do
    corpus="$CARGO_TARGET_DIR/corpus/$t"
    artifacts="$CARGO_TARGET_DIR/artifacts/$t"
    log="$CARGO_TARGET_DIR/logs/$t.log"
    mkdir -p "$corpus" "$artifacts" "$(dirname "$log")"
    rc=0
    "$bin/$t" "$corpus" "$here/corpus/$t" -max_total_time="$seconds" -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$artifacts/" \
        >"$log" 2>&1 || rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)
    files=$(find "$corpus" -type f | wc -l)
    crashes=$(find "$artifacts" -type f | wc -l)
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$t" "$seconds" "${execs:-?}" \
        "${speed:-?}" "${cov:-?}" "$files" "$crashes"
    if [ "$rc" != 0 ] || [ "$crashes" != 0 ]; then
        failed=1
        echo "fuzz/run.sh: $t failed (exit $rc); its log: $log" >&2
        tail -n 30 "$log" >&2
    fi
done
exit $failed
