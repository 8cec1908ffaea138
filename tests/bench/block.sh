#!/usr/bin/env bash
# Block benchmark: sequential read throughput inside the guest, ballast's virtio-blk against
# QEMU's (microvm, virtio-blk-device), the same kernel, initramfs and disk image, in the same
# environment (directly on a host with hardware virtualisation, else both inside one L1 test
# host under TCG with nested SVM), alternating, RUNS boots each, REPS reads per boot.
#   tests/bench/block.sh [RUNS] [REPS]        (defaults 3 and 3)
# BALLAST_BIN=PATH benchmarks a given static ballast; BALLAST_BENCH_ARGS="--sample-interval 60"
# adds `ballast run` arguments; BALLAST_BENCH_VCPUS=N gives both VMs N vCPUs (default 1).
# Each read is `dd bs=1M` of a 256 MiB file on an ext4 disk, the guest's page cache
# dropped first (tests/bench/block-guest.sh); the VMMs read the image from the host's page
# cache (tests/bench/block-loop.sh). Prints every read as a JSON line, then a markdown
# table (medians) with the ratio.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=resources/lib.sh
. "$repo/resources/lib.sh"
# shellcheck source=tests/harness/host-lib.sh
. "$repo/tests/harness/host-lib.sh"
# shellcheck source=tests/bench/bench-lib.sh
. "$here/bench-lib.sh"
runs=${1:-3}
reps=${2:-3}
mem_mib=512
file_mib=256

ensure_qemu
ensure_apt cpio gzip e2fsprogs openssl
ensure_fetched
extra=${BALLAST_BENCH_ARGS:-}
vcpus=${BALLAST_BENCH_VCPUS:-1}
if [ -z "${BALLAST_BIN:-}" ]; then
    bins=$("$repo/tests/harness/build-ballast.sh") || die "building the static ballast failed"
    eval "$bins"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$repo/resources/build-guest-initramfs.sh" --scenario "$here/block-guest.sh" -o "$work/guest.cpio.gz"
mkdir "$work/disk"
gen_bytes block-bench "${file_mib}M" >"$work/disk/big.bin"
"$repo/resources/build-disk-image.sh" "$work/disk" "$work/disk.img"
rm -rf "$work/disk"

mode=nested
if grep -qw -e vmx -e svm /proc/cpuinfo && { : <>/dev/kvm; } 2>/dev/null; then mode=direct; fi
log "mode: $mode"

if [ "$mode" = direct ]; then
    # shellcheck disable=SC2153 # BALLAST_BIN comes from build-ballast.sh
    sh "$here/block-loop.sh" "$BALLAST_BIN" "$(command -v qemu-system-x86_64)" \
        "$BALLAST_KERNEL" "$work/guest.cpio.gz" "$work/disk.img" "$mem_mib" "$runs" "$reps" "$extra" "$vcpus" |
        tee "$work/out" | grep --line-buffered '^BENCH' || true
else
    # QEMU goes into L1 with its shared libraries and the firmware microvm loads; the
    # image is L1's /dev/vda (a virtio-blk-pci disk of the outer QEMU).
    bench_payload "$work/payload" "$here/block-loop.sh" "$work/guest.cpio.gz" \
        "sh /bench/block-loop.sh /bin/ballast /usr/bin/qemu-system-x86_64 /guest/bzImage /bench/guest.cpio.gz /dev/vda $mem_mib $runs $reps '$extra' $vcpus"
    run_l1 --stderr-to-log "$work/payload" 3072 "$work/out" -nic none \
        -drive "file=$work/disk.img,format=raw,if=none,id=d0,cache=writeback,readonly=on" \
        -device virtio-blk-pci,drive=d0,serial=bench
fi

grep '^BENCH ' "$work/out" | sed 's/^BENCH //' >"$work/reads.jsonl" || true
python3 - "$work/reads.jsonl" "$mode" "$runs" "$reps" "$file_mib" "$extra" "$vcpus" <<'PY'
import json, statistics, sys
reads = [json.loads(l) for l in open(sys.argv[1])]
mode, runs, reps, file_mib = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
# The first read of a boot also faults the guest's page-cache pages into the VMM's
# memory (first touch of guest RAM); later reads reuse them. Both are reported.
def rates(vmm, first):
    return [r["mib_per_s"] for r in reads
            if r["vmm"] == vmm and r["exit"] == 0 and (r["rep"] == 1) == first]
def cell(xs):
    return "-" if not xs else f"{statistics.median(xs):.1f} ({min(xs):.0f}-{max(xs):.0f}, n={len(xs)})"
extra = sys.argv[6] if len(sys.argv) > 6 and sys.argv[6] else ""
vcpus = sys.argv[7]
print(f"\nblock benchmark ({mode} mode, {vcpus} vCPU(s){', ballast ' + extra if extra else ''}): dd bs=1M of a {file_mib} MiB file, guest page cache dropped"
      f" before each read, {runs} boots x {reps} reads per VMM; MiB/s, median (min-max, n)")
print("| VMM | first read of a boot | later reads |")
print("|---|---|---|")
med = {}
for vmm in ("ballast", "qemu"):
    first, later = rates(vmm, True), rates(vmm, False)
    print(f"| {vmm} | {cell(first)} | {cell(later)} |")
    med[vmm] = [statistics.median(xs) if xs else None for xs in (first, later)]
b, q = med["ballast"], med["qemu"]
for i, what in enumerate(("first read", "later reads")):
    if b[i] and q[i]:
        print(f"\nballast / qemu read throughput, {what}: {b[i] / q[i]:.2f}", end="")
print()
PY
