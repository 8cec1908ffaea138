#!/bin/sh
# A stand-in for `ballast run` backed by QEMU's microvm (KVM when it works, TCG
# otherwise), so scenarios can be checked against a known-good VMM:
#   BALLAST_E2E_MODE=direct tests/harness/run-scenario.sh --ballast tests/harness/qemu-as-ballast.sh DIR
# and, in the L1 test host, the soak's control (BALLAST_L2_VMM=qemu, tests/soak/nested.sh).
# Takes the `ballast run` options the scenarios use: --kernel --initrd --cmdline
# --vcpus --memory --disk PATH[,readonly=on] (virtio-blk over virtio-mmio, in order);
# --api-sock is ignored (no REST API here), and so is any other option. Like ballast,
# it attaches a virtio-balloon device over virtio-mmio. POSIX sh: the L1 test host
# runs it with busybox.
# (No -nodefaults: without the default PC speaker port 0x61 the kernel cannot
# calibrate the TSC against PIT channel 2 under TCG, and hangs early in boot.)
set -eu
[ "${1:-}" = run ] || { echo "usage: $0 run --kernel K --initrd I --cmdline C [--vcpus N] [--memory SIZE]" >&2; exit 2; }
shift
kernel='' initrd='' cmdline='' vcpus=1 memory=256M disks='' n=0
while [ $# -gt 0 ]; do
    case $1 in
    --disk)
        ro=''
        case $2 in *,readonly=on) ro=,readonly=on ;; esac
        disks="$disks -drive file=${2%%,*},format=raw,if=none,id=disk$n$ro -device virtio-blk-device,drive=disk$n"
        n=$((n + 1))
        shift 2 ;;
    --api-sock) echo "$0: no REST API here; ignoring --api-sock $2" >&2; shift 2 ;;
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
# shellcheck disable=SC2086 # $disks is words on purpose
exec qemu-system-x86_64 -M microvm,acpi=on -accel "$accel" -cpu "$cpu" -smp "$vcpus" -m "$memory" \
    -kernel "$kernel" -initrd "$initrd" -append "$cmdline" \
    -nographic -no-reboot -device virtio-balloon-device $disks
