# shellcheck shell=bash
# The nested L1 test host's outer QEMU, one definition for the harness
# (run-scenario.sh) and the benchmarks (tests/bench/bench-lib.sh). Sourced after
# resources/lib.sh, once ensure_fetched has set BALLAST_L1_KERNEL.
#
# Knobs (environment):
#   BALLAST_L1_QEMU     the outer qemu-system-x86_64 (default: the one on PATH)
#   BALLAST_L1_CMDLINE  words added to L1's kernel command line
#   BALLAST_L1_SMP      L1's vCPUs (default 2: MTTCG runs one host thread each)
#   BALLAST_L1_ACCEL    the outer QEMU's -accel (default tcg; tcg,thread=single runs
#                       all of L1's vCPUs on one host thread)
#   BALLAST_L1_QEMU_ARGS  words added to the outer QEMU's command line (for example
#                       `-d cpu_reset -D FILE`: L1's registers when it resets)

# l1_qemu MEM_MIB INITRD [QEMU_ARG...]: boots the L1 test host under TCG with nested
# SVM, its serial console on stdout; returns QEMU's status.
l1_qemu() {
    local mem=$1 initrd=$2
    shift 2
    "${BALLAST_L1_QEMU:-qemu-system-x86_64}" -M q35 -accel "${BALLAST_L1_ACCEL:-tcg}" -cpu EPYC,+svm \
        -smp "${BALLAST_L1_SMP:-2}" -m "$mem" -kernel "$BALLAST_L1_KERNEL" -initrd "$initrd" \
        -append "console=ttyS0 panic=-1 rdinit=/init quiet ${BALLAST_L1_CMDLINE:-}" \
        -nographic -no-reboot ${BALLAST_L1_QEMU_ARGS:-} "$@"
}

# payload_add_qemu DIR: qemu-system-x86_64 into the L1 payload DIR (usr/bin), with the
# shared libraries ldd names (at their own paths) and the firmware the microvm machine
# loads (usr/share/qemu/{bios-microvm.bin,linuxboot_dma.bin}).
payload_add_qemu() {
    local p=$1 qemu lib f
    mkdir -p "$p/usr/share/qemu" "$p/lib64"
    qemu=$(command -v qemu-system-x86_64)
    install -D -m 755 "$qemu" "$p/usr/bin/qemu-system-x86_64"
    ldd "$qemu" | awk '/=> \// { print $3 } /^[ \t]*\/lib64/ { print $1 }' | while read -r lib; do
        install -D -m 755 "$(realpath "$lib")" "$p$lib"
    done
    # Debian's seabios package ships the microvm BIOS in its own folder, and QEMU 10 from
    # bookworm-backports does not link it into /usr/share/qemu.
    for f in bios-microvm.bin linuxboot_dma.bin; do
        local src=/usr/share/qemu/$f
        [ -e "$src" ] || src=/usr/share/seabios/$f
        install -m 644 "$src" "$p/usr/share/qemu/$f"
    done
}
