# shellcheck shell=bash
# Nested mode of the benchmarks (tests/bench/boot.sh, tests/bench/block.sh): both VMMs run
# inside one L1 test host under TCG with nested SVM. Sourced by those scripts, after
# resources/lib.sh (ensure_fetched sets BALLAST_KERNEL and BALLAST_L1_KERNEL).
# shellcheck source=tests/harness/l1-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../harness/l1-lib.sh"

# bench_payload DIR LOOP_SCRIPT GUEST_INITRD COMMAND: the L1 payload of a benchmark in DIR:
# ballast ($BALLAST_BIN) as /bin/ballast, QEMU (payload_add_qemu), GUEST_INITRD as
# /bench/guest.cpio.gz, LOOP_SCRIPT as /bench/<its name>, and COMMAND, the line L1's init
# runs (tests/harness/l1-init), as /etc/ballast/bench.
bench_payload() {
    local p=$1 loop=$2 guest=$3 command=$4
    mkdir -p "$p/bin" "$p/etc/ballast" "$p/bench"
    install -m 755 "$BALLAST_BIN" "$p/bin/ballast"
    payload_add_qemu "$p"
    install -m 644 "$guest" "$p/bench/guest.cpio.gz"
    install -m 755 "$loop" "$p/bench/$(basename "$loop")"
    printf '%s\n' "$command" >"$p/etc/ballast/bench"
}

# run_l1 [--stderr-to-log] PAYLOAD MEMORY_MIB LOG [QEMU_ARG...]: builds the L1 test host's
# initramfs with PAYLOAD as its second segment (tests/harness/build-l1-initramfs.sh; the
# image is written next to PAYLOAD as l1.cpio.gz) and boots it under TCG with nested SVM,
# 2 vCPUs and MEMORY_MIB of RAM, QEMU_ARG... appended to the outer QEMU's command line
# (e.g. a disk), for an hour at the most. L1's console, carriage returns removed, goes to
# LOG, and its BENCH lines to stdout as they come. The outer QEMU's stderr stays the
# caller's; with --stderr-to-log it joins the console in LOG instead, less QEMU's warnings
# about CPUID features TCG lacks. Returns 0 however L1 ended: the caller reads LOG.
run_l1() {
    local errfd=2
    if [ "$1" = --stderr-to-log ]; then errfd=1; shift; fi
    local payload=$1 mem=$2 out=$3 l1
    shift 3
    l1="$(dirname "$payload")/l1.cpio.gz"
    "$(dirname "${BASH_SOURCE[0]}")/../harness/build-l1-initramfs.sh" --payload "$payload" -o "$l1"
    # One L1 test host at a time, as run-scenario.sh does (BALLAST_L1_LOCK): a benchmark beside
    # another L1 would measure the two sharing the cores.
    exec 9>"${BALLAST_L1_LOCK:-/tmp/ballast-l1.lock}"
    if ! flock -n 9; then
        echo "another L1 test host runs on this machine; waiting for it to end" >&2
        flock 9
    fi
    timeout 3600 bash -c "$(declare -f l1_qemu); l1_qemu \"\$@\"" l1 \
        "$mem" "$l1" "$@" </dev/null 2>&"$errfd" | tr -d '\r' | grep --line-buffered -v "TCG doesn't support" |
        tee "$out" | grep --line-buffered '^BENCH' || true
}
