#!/usr/bin/env bash
# Network benchmark: TCP throughput between the guest and the host end of its TAP, both ways,
# ballast's virtio-net against QEMU's (microvm, virtio-net-device, userspace backend), the
# same kernel, initramfs and TAP, in the same environment (directly on a host with hardware
# virtualisation, else both inside one L1 test host under TCG with nested SVM), alternating,
# RUNS boots each, REPS transfers of MIB MiB each way per boot.
#   tests/bench/net.sh [RUNS] [REPS] [MIB]        (defaults 3, 3 and 256)
# BALLAST_BIN=PATH benchmarks a given static ballast; BALLAST_BENCH_ARGS adds `ballast run`
# arguments; BALLAST_BENCH_VCPUS=N gives both VMs N vCPUs (default 1).
# Each transfer is one busybox nc connection started by the guest (tests/bench/net-guest.sh)
# to a server on the host end of the TAP (tests/bench/net-loop.sh, which makes the TAP):
# zeros, so what is measured is the network path, not a generator or a checksum. Prints
# every transfer as a JSON line, then a markdown table (medians) with the ratios.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=resources/lib.sh
. "$repo/resources/lib.sh"
# shellcheck source=tests/bench/bench-lib.sh
. "$here/bench-lib.sh"
runs=${1:-3}
reps=${2:-3}
mib=${3:-256}
mem_mib=512

ensure_qemu
ensure_apt cpio gzip
ensure_fetched
extra=${BALLAST_BENCH_ARGS:-}
vcpus=${BALLAST_BENCH_VCPUS:-1}
if [ -z "${BALLAST_BIN:-}" ]; then
    bins=$("$repo/tests/harness/build-ballast.sh") || die "building the static ballast failed"
    eval "$bins"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$repo/resources/build-guest-initramfs.sh" --scenario "$here/net-guest.sh" -o "$work/guest.cpio.gz"

mode=nested
if grep -qw -e vmx -e svm /proc/cpuinfo && { : <>/dev/kvm; } 2>/dev/null; then mode=direct; fi
log "mode: $mode"

if [ "$mode" = direct ]; then
    [ "$(id -u)" = 0 ] || die "making the benchmark's TAP interface needs root"
    # shellcheck disable=SC2153 # BALLAST_BIN comes from build-ballast.sh
    sh "$here/net-loop.sh" "$BALLAST_BIN" "$(command -v qemu-system-x86_64)" \
        "$BALLAST_KERNEL" "$work/guest.cpio.gz" "$mem_mib" "$runs" "$reps" "$mib" "$extra" "$vcpus" |
        tee "$work/out" | grep --line-buffered '^BENCH' || true
else
    bench_payload "$work/payload" "$here/net-loop.sh" "$work/guest.cpio.gz" \
        "sh /bench/net-loop.sh /bin/ballast /usr/bin/qemu-system-x86_64 /guest/bzImage /bench/guest.cpio.gz $mem_mib $runs $reps $mib '$extra' $vcpus"
    run_l1 --stderr-to-log "$work/payload" 3072 "$work/out" -nic none
fi

grep '^BENCH ' "$work/out" | sed 's/^BENCH //' >"$work/xfers.jsonl" || true
python3 - "$work/xfers.jsonl" "$mode" "$runs" "$reps" "$mib" "$extra" "$vcpus" <<'PY'
import json, statistics, sys
xfers = [json.loads(l) for l in open(sys.argv[1])]
mode, runs, reps, mib, extra, vcpus = sys.argv[2:8]
def rates(vmm, d):
    return [x["mib_per_s"] for x in xfers
            if x["vmm"] == vmm and x["dir"] == d and x["exit"] == 0 and x["bytes"] == int(mib) << 20]
def cell(xs):
    return "-" if not xs else f"{statistics.median(xs):.1f} ({min(xs):.0f}-{max(xs):.0f}, n={len(xs)})"
print(f"\nnetwork benchmark ({mode} mode, {vcpus} vCPU(s){', ballast ' + extra if extra else ''}): TCP, one busybox nc"
      f" connection of {mib} MiB per transfer, {runs} boots x {reps} transfers each way per VMM; MiB/s, median (min-max, n)")
print("| VMM | guest to host | host to guest |")
print("|---|---|---|")
med = {}
for vmm in ("ballast", "qemu"):
    g2h, h2g = rates(vmm, "g2h"), rates(vmm, "h2g")
    print(f"| {vmm} | {cell(g2h)} | {cell(h2g)} |")
    med[vmm] = [statistics.median(xs) if xs else None for xs in (g2h, h2g)]
b, q = med["ballast"], med["qemu"]
for i, what in enumerate(("guest to host", "host to guest")):
    if b[i] and q[i]:
        print(f"\nballast / qemu throughput, {what}: {b[i] / q[i]:.2f}", end="")
print()
PY
