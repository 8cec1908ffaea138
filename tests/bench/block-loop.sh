#!/bin/sh
# Boots the block benchmark guest (block-guest.sh) under ballast and under QEMU's microvm,
# in turn, RUNS times each, on the same disk, and prints one line per read:
#   BENCH {"vmm":"ballast"|"qemu","run":N,"rep":R,"bytes":B,"seconds":S,"mib_per_s":M,"exit":RC}
# The disk (a raw ext4 image or block device) goes read-only to both VMMs as virtio-blk
# over virtio-mmio, QEMU's with its defaults (cache=writeback, aio=threads). It is read
# once first, so both VMMs read it from this host's page cache: what is measured is the
# guest's driver and the VMM's device, not the disk under them.
# POSIX sh: it runs under busybox in the L1 test host and under bash/dash on a host with KVM.
# Usage: block-loop.sh BALLAST QEMU KERNEL INITRD DISK MEMORY_MIB RUNS REPS [BALLAST_ARGS [VCPUS]]
# (BALLAST_ARGS: more `ballast run` arguments, one word each, as "--sample-interval 10";
# VCPUS: the vCPUs of both VMs, default 1)
set -u
ballast=$1 qemu=$2 kernel=$3 initrd=$4 disk=$5 mem_mib=$6 runs=$7 reps=$8 extra=${9:-} vcpus=${10:-1}
cmdline="console=ttyS0 reboot=k panic=-1 rdinit=/init quiet bench.reps=$reps"
fifo=/tmp/block-bench.fifo

cat "$disk" >/dev/null

one() { # NAME RUN CMD...
    name=$1 run=$2
    shift 2
    rm -f "$fifo"
    mkfifo "$fifo"
    "$@" >"$fifo" 2>&1 &
    pid=$!
    lines=''
    while IFS= read -r line; do
        line=$(printf '%s' "$line" | tr -d '\r')
        case $line in
        *BLOCK-READ\ \{*) lines="$lines ${line#*BLOCK-READ \{}" ;;
        *BLOCK-ERROR*) echo "$name run $run: $line" ;;
        esac
    done <"$fifo"
    wait "$pid"
    rc=$?
    for l in $lines; do
        printf '\nBENCH {"vmm":"%s","run":%s,%s,"exit":%s}\n' "$name" "$run" "${l%\}}" "$rc"
    done
    [ -n "$lines" ] || printf '\nBENCH-FAILED %s run %s: exit %s, no reads\n' "$name" "$run" "$rc"
}

i=1
while [ "$i" -le "$runs" ]; do
    # shellcheck disable=SC2086 # the extra arguments are words
    one ballast "$i" "$ballast" run --kernel "$kernel" --initrd "$initrd" \
        --cmdline "$cmdline" --vcpus "$vcpus" --memory "${mem_mib}M" --disk "$disk,readonly=on" $extra
    one qemu "$i" "$qemu" -M microvm,acpi=on -accel kvm -cpu host -smp "$vcpus" -m "${mem_mib}M" \
        -kernel "$kernel" -initrd "$initrd" -append "$cmdline" \
        -nographic -no-reboot -nodefaults -serial stdio \
        -drive "file=$disk,format=raw,if=none,id=d0,readonly=on" -device virtio-blk-device,drive=d0
    i=$((i + 1))
done
