#!/bin/sh
# A stand-in for `ballast run` backed by QEMU's microvm (KVM when it works, TCG
# otherwise), so scenarios can be checked against a known-good VMM:
#   BALLAST_E2E_MODE=direct tests/harness/run-scenario.sh --ballast tests/harness/qemu-as-ballast.sh DIR
# and, in the L1 test host, the soak's control (BALLAST_L2_VMM=qemu, tests/soak/nested.sh).
# Takes the `ballast run` options the scenarios use: --kernel --initrd --cmdline
# --vcpus --memory --disk PATH[,readonly=on] (virtio-blk over virtio-mmio, in order);
# --api-sock brings up QMP on 127.0.0.1:4444 instead of a REST API, for `balloon set SIZE`
# (the one client command it takes); any other option is ignored. Like ballast,
# it attaches a virtio-balloon device over virtio-mmio. POSIX sh: the L1 test host
# runs it with busybox.
# (No -nodefaults: without the default PC speaker port 0x61 the kernel cannot
# calibrate the TSC against PIT channel 2 under TCG, and hangs early in boot.)
set -eu
# The guest's memory and the QMP port, for `balloon set` (one VM at a time).
state=/tmp/qemu-as-ballast.mem qmp_port=4444

# mib SIZE: 320M, 1G, 262144K or plain MiB, in MiB.
mib() {
    case $1 in
    *[Kk]) echo $((${1%?} / 1024)) ;;
    *[Gg]) echo $((${1%?} * 1024)) ;;
    *[Mm]) echo "${1%?}" ;;
    *) echo "$1" ;;
    esac
}

# `balloon set SIZE` (all `ballast balloon` a scenario needs here): QMP's balloon command takes
# the memory the guest keeps, so the balloon's size comes off the guest's memory.
if [ "${1:-}" = balloon ] && [ "${2:-}" = set ]; then
    keep=$(($(cat "$state") - $(mib "$3")))
    printf '{"execute":"qmp_capabilities"}\n{"execute":"balloon","arguments":{"value":%d}}\n' \
        $((keep * 1048576)) | nc -w 2 127.0.0.1 "$qmp_port" | grep -q '"return": {}' ||
        { echo "$0: QEMU refused the balloon target" >&2; exit 1; }
    exit 0
fi
[ "${1:-}" = run ] || { echo "usage: $0 run --kernel K --initrd I --cmdline C [--vcpus N] [--memory SIZE] | balloon set SIZE" >&2; exit 2; }
shift
qmp=
kernel='' initrd='' cmdline='' vcpus=1 memory=256M disks='' n=0
while [ $# -gt 0 ]; do
    case $1 in
    --disk)
        ro=''
        case $2 in *,readonly=on) ro=,readonly=on ;; esac
        disks="$disks -drive file=${2%%,*},format=raw,if=none,id=disk$n$ro -device virtio-blk-device,drive=disk$n"
        n=$((n + 1))
        shift 2 ;;
    --api-sock) # No REST API here: QMP on a TCP port instead, for `balloon set`.
        qmp="-qmp tcp:127.0.0.1:$qmp_port,server=on,wait=off"; shift 2 ;;
    --kernel) kernel=$2; shift 2 ;;
    --initrd) initrd=$2; shift 2 ;;
    --cmdline) cmdline=$2; shift 2 ;;
    --vcpus) vcpus=$2; shift 2 ;;
    --memory) memory=$2; shift 2 ;;
    --*=* | --tsc-deadline | --thp | --vsock-sock | --sample-interval | --log-level | --limit | --balloon)
        echo "$0: ignoring $1" >&2
        case $1 in --*=*) shift ;; *) shift 2 ;; esac ;;
    *) echo "$0: ignoring $1" >&2; shift ;;
    esac
done
accel=tcg cpu=max
if grep -qw -e vmx -e svm /proc/cpuinfo && { : <>/dev/kvm; } 2>/dev/null; then
    accel=kvm cpu=host # what KVM supports, as ballast gives its guests
else
    # Under TCG on a busy host the guest fails to calibrate its TSC against the
    # PIT and then hangs for good: hand it the host's clock rate instead.
    khz=$(awk -F': ' '/^cpu MHz/ {printf "%d", $2 * 1000; exit}' /proc/cpuinfo)
    cmdline="$cmdline tsc_early_khz=$khz lpj=$((khz * 4))" # lpj: HZ=250 in Debian's kernel
fi
mib "$memory" >"$state"
# shellcheck disable=SC2086 # $disks and $qmp are words on purpose
exec qemu-system-x86_64 -M microvm,acpi=on -accel "$accel" -cpu "$cpu" -smp "$vcpus" -m "$memory" \
    -kernel "$kernel" -initrd "$initrd" -append "$cmdline" \
    -nographic -no-reboot -device virtio-balloon-device $disks $qmp
