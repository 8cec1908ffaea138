#!/usr/bin/env bash
# Boot-time benchmark: ballast against QEMU's microvm, the same kernel and initramfs, in the
# same environment (directly on a host with hardware virtualisation, else both inside one L1
# test host under TCG with nested SVM), alternating, RUNS boots each.
#   tests/bench/boot.sh [RUNS]        (default 5)
# Prints every boot as a JSON line, then a summary table (medians, and the ratio).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=resources/lib.sh
. "$repo/resources/lib.sh"
# shellcheck source=tests/bench/bench-lib.sh
. "$here/bench-lib.sh"
runs=${1:-5}
mem_mib=256

ensure_qemu
ensure_apt cpio gzip
ensure_fetched
eval "$("$repo/tests/harness/build-ballast.sh")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The guest boots to its init, which finds no scenario and powers off.
"$repo/resources/build-guest-initramfs.sh" -o "$work/guest.cpio.gz"

mode=nested
if grep -qw -e vmx -e svm /proc/cpuinfo && { : <>/dev/kvm; } 2>/dev/null; then mode=direct; fi
log "mode: $mode"

if [ "$mode" = direct ]; then
    sh "$here/boot-loop.sh" "$BALLAST_BIN" "$(command -v qemu-system-x86_64)" \
        "$BALLAST_KERNEL" "$work/guest.cpio.gz" "$mem_mib" "$runs" | tee "$work/out"
else
    # QEMU goes into L1 with its shared libraries and the firmware microvm loads.
    bench_payload "$work/payload" "$here/boot-loop.sh" "$work/guest.cpio.gz" \
        "sh /bench/boot-loop.sh /bin/ballast /usr/bin/qemu-system-x86_64 /guest/bzImage /bench/guest.cpio.gz $mem_mib $runs"
    run_l1 "$work/payload" 2048 "$work/out"
fi

grep '^BENCH ' "$work/out" | sed 's/^BENCH //' >"$work/runs.jsonl"
python3 - "$work/runs.jsonl" "$mode" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
def med(vmm, key):
    xs = [r[key] for r in runs if r["vmm"] == vmm and r[key] is not None and r["exit"] == 0]
    return (statistics.median(xs), len(xs)) if xs else (None, 0)
print(f"\nboot benchmark ({sys.argv[2]} mode), medians over successful boots:")
print(f"| VMM | boots | to guest init (s) | to exit (s) | RSS outside guest RAM (MiB) |")
print(f"|---|---|---|---|---|")
for vmm in ("ballast", "qemu"):
    (i, n), (t, _), (r, _) = med(vmm, "init_s"), med(vmm, "total_s"), med(vmm, "rss_outside_kib")
    fmt = lambda x, d=2: "-" if x is None else f"{x:.{d}f}"
    print(f"| {vmm} | {n} | {fmt(i)} | {fmt(t)} | {fmt(None if r is None else r / 1024, 1)} |")
(bi, _), (qi, _) = med("ballast", "init_s"), med("qemu", "init_s")
if bi and qi:
    print(f"\nballast / qemu time to guest init: {bi / qi:.2f}")
PY
