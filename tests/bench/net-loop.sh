#!/bin/sh
# Boots the network benchmark guest (net-guest.sh) under ballast and under QEMU's microvm,
# in turn, RUNS times each, both on the same TAP interface, and prints one line per transfer:
#   BENCH {"vmm":"ballast"|"qemu","run":N,"dir":"g2h"|"h2g","rep":R,"bytes":B,"seconds":S,"mib_per_s":M,"exit":RC}
# The TAP (bt-bench0, 192.168.218.1/24) and two TCP servers on it are made here, once: port
# 5001 swallows what it gets, port 5002 sends MIB MiB of zeros to each client. QEMU's device
# is virtio-net-device on virtio-mmio with its userspace backend (vhost off: ballast's
# device is userspace too), the same offloads negotiated by the same driver.
# POSIX sh: it runs under busybox in the L1 test host and under bash/dash on a host with KVM.
# Usage: net-loop.sh BALLAST QEMU KERNEL INITRD MEMORY_MIB RUNS REPS MIB [BALLAST_ARGS [VCPUS]]
set -u
ballast=$1 qemu=$2 kernel=$3 initrd=$4 mem_mib=$5 runs=$6 reps=$7 mib=$8 extra=${9:-} vcpus=${10:-1}
tap=bt-bench0
mac=06:00:ac:10:00:02
cmdline="console=ttyS0 reboot=k panic=-1 rdinit=/init quiet ballast.ip=eth0:192.168.218.2/24 bench.reps=$reps bench.mib=$mib"
fifo=/tmp/net-bench.fifo

{ ip tuntap add dev "$tap" mode tap 2>/dev/null || tunctl -t "$tap" >/dev/null; } &&
    ip addr add 192.168.218.1/24 dev "$tap" && ip link set "$tap" up ||
    { echo "BENCH-FAILED cannot make the TAP interface $tap"; exit 1; }
mkfifo /tmp/net-bench.hold
(while :; do nc -l -p 5001 <>/tmp/net-bench.hold >/dev/null; done) &
sink=$!
(while :; do dd if=/dev/zero bs=64k count=$((mib * 16)) 2>/dev/null | nc -l -p 5002; done) &
source=$!
cleanup() {
    kill "$sink" "$source" 2>/dev/null
    ip tuntap del dev "$tap" mode tap 2>/dev/null || tunctl -d "$tap" >/dev/null 2>&1
}
trap cleanup EXIT

# A VM gets two minutes to boot and half a second per MiB it moves at the most (an outage
# that outlasts that shows as a failed run rather than an L1 test host held for an hour).
limit_s=$((120 + reps * mib))

one() { # NAME RUN CMD...
    name=$1 run=$2
    shift 2
    rm -f "$fifo"
    mkfifo "$fifo"
    timeout -s KILL "$limit_s" "$@" >"$fifo" 2>&1 &
    pid=$!
    lines=''
    while IFS= read -r line; do
        line=$(printf '%s' "$line" | tr -d '\r')
        case $line in
        *NET-XFER\ \{*) lines="$lines ${line#*NET-XFER \{}" ;;
        *NET-ERROR*) echo "$name run $run: $line" ;;
        esac
    done <"$fifo"
    wait "$pid"
    rc=$?
    for l in $lines; do
        printf '\nBENCH {"vmm":"%s","run":%s,%s,"exit":%s}\n' "$name" "$run" "${l%\}}" "$rc"
    done
    [ -n "$lines" ] || printf '\nBENCH-FAILED %s run %s: exit %s, no transfers\n' "$name" "$run" "$rc"
}

i=1
while [ "$i" -le "$runs" ]; do
    # shellcheck disable=SC2086 # the extra arguments are words
    one ballast "$i" "$ballast" run --kernel "$kernel" --initrd "$initrd" --cmdline "$cmdline" \
        --vcpus "$vcpus" --memory "${mem_mib}M" --net "tap=$tap,mac=$mac" $extra
    one qemu "$i" "$qemu" -M microvm,acpi=on -accel kvm -cpu host -smp "$vcpus" -m "${mem_mib}M" \
        -kernel "$kernel" -initrd "$initrd" -append "$cmdline" \
        -nographic -no-reboot -nodefaults -serial stdio \
        -netdev "tap,id=n0,ifname=$tap,script=no,downscript=no,vhost=off" \
        -device "virtio-net-device,netdev=n0,mac=$mac"
    i=$((i + 1))
done
