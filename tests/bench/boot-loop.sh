#!/bin/sh
# Boots the same kernel and initramfs under ballast and under QEMU's microvm, in turn,
# RUNS times each, and prints one line per boot:
#   BENCH {"vmm":"ballast"|"qemu","run":N,"init_s":T,"total_s":T,"rss_outside_kib":K,"exit":RC}
# init_s: from starting the VMM to the guest init's first console line ("ballast-init:").
# total_s: to the VMM's exit after the guest powers off.
# rss_outside_kib: the VMM's resident memory minus its guest-RAM mapping, read at init_s.
# POSIX sh: it runs under busybox in the L1 test host and under bash/dash on a host with KVM.
# Usage: boot-loop.sh BALLAST QEMU KERNEL INITRD MEMORY_MIB RUNS
set -u
ballast=$1 qemu=$2 kernel=$3 initrd=$4 mem_mib=$5 runs=$6
cmdline="console=ttyS0 reboot=k panic=-1 rdinit=/init quiet"
fifo=/tmp/boot-bench.fifo

now() { cut -d' ' -f1 /proc/uptime; }

# Resident KiB of PID outside mappings of exactly the guest RAM size.
rss_outside() {
    awk -v ram_kib=$((mem_mib * 1024)) '
        /^[0-9a-f]+-[0-9a-f]+ / { size = 0 }
        /^Size:/ { size = $2 }
        /^Rss:/ { if (size != ram_kib) total += $2 }
        END { print total + 0 }' "/proc/$1/smaps" 2>/dev/null || echo null
}

one() { # NAME RUN CMD...
    name=$1 run=$2
    shift 2
    rm -f "$fifo"
    mkfifo "$fifo"
    start=$(now)
    "$@" >"$fifo" 2>&1 &
    pid=$!
    init=null rss=null
    while IFS= read -r line; do
        case $line in
        *ballast-init:*)
            if [ "$init" = null ]; then
                init=$(awk -v a="$start" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }')
                rss=$(rss_outside "$pid")
            fi ;;
        esac
    done <"$fifo"
    wait "$pid"
    rc=$?
    total=$(awk -v a="$start" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }')
    printf '\nBENCH {"vmm":"%s","run":%s,"init_s":%s,"total_s":%s,"rss_outside_kib":%s,"exit":%s}\n' \
        "$name" "$run" "$init" "$total" "$rss" "$rc"
}

i=1
while [ "$i" -le "$runs" ]; do
    one ballast "$i" "$ballast" run --kernel "$kernel" --initrd "$initrd" \
        --cmdline "$cmdline" --vcpus 1 --memory "${mem_mib}M"
    one qemu "$i" "$qemu" -M microvm,acpi=on -accel kvm -cpu host -smp 1 -m "${mem_mib}M" \
        -kernel "$kernel" -initrd "$initrd" -append "$cmdline" \
        -nographic -no-reboot -nodefaults -serial stdio -device virtio-balloon-device
    i=$((i + 1))
done
