#!/usr/bin/env bash
# Runs scenarios end to end:
#   run-scenario.sh [--ballast PATH] [--agent PATH] [--stream] [--l1-check] SCENARIO_DIR...
#
# A scenario is a folder with
#   guest.sh      run in the guest as /scenario.sh (`result KEY VALUE` reports a result)
#   ballast.args  extra `ballast run` arguments ('#' lines are comments)
#   expect.json   what the results must be (read by the Rust tests, not here)
# and optionally
#   cmdline       words appended to the guest kernel command line (ballast.mount=...)
#   disks         the guest's disks, one a line, in order (the first is /dev/vda):
#                   NAME [readonly] [size=MIB] [from=DIR] [gen=SCRIPT]
#                 each an ext4 image built on this host by resources/build-disk-image.sh
#                 from DIR (a folder of the scenario) and/or the files SCRIPT writes
#                 (run with bash -e in the folder that becomes the disk's root, with
#                 host-lib.sh sourced: gen_bytes SEED SIZE makes reproducible data);
#                 neither: an empty file system. size= defaults to what the files need
#                 plus room (build-disk-image.sh). ballast gets --disk IMG[,readonly=on].
#   taps          TAP interfaces for the scenario's --net devices, `NAME ADDRESS/PREFIX`
#                 a line: made (and given the address) where ballast runs, before it
#                 starts, and deleted after it ends (tests/harness/run-one.sh)
#   host.sh       run on the host side of ballast while ballast runs (inside the L1
#                 test host in nested mode): see tests/harness/run-one.sh and the
#                 helpers in tests/harness/host-lib.sh (wait_console, send_guest,
#                 host_result, ballast_rss_kib, `ballast` on PATH)
#   agent         the name of a test agent to start in the guest instead of ballast-agent
#                 (a static binary built beside ballast: hostile-agent)
#   after.sh      run on this host after the run (bash), with host-lib.sh sourced and
#                 DISK_<NAME> (NAME upper-cased) naming each image, DISK_<NAME>_SHA256
#                 its sha256 as built; debugfs and e2fsck are on PATH
#
# For each scenario, stdout gets one stream of JSON lines:
#   {"harness_mode":"direct"|"nested","scenario":NAME}
#   {"console_log":PATH}               the guest's console (plus ballast's stderr,
#                                      host.sh's lines as "[host] ...", after.sh's as "[after] ...")
#   {"l1_...":...}                     nested only: facts about the L1 test host
#   {...}                              every BALLAST-RESULT payload the guest, host.sh
#                                      (with {"host_exit":RC}) and after.sh (with
#                                      {"host_after_exit":RC}) printed
#   {"harness_seconds":S}              how long the ballast run took (wall clock)
#   {"harness_guest_poweroff":B}       whether the guest kernel said "reboot: Power down"
#   {"harness_guest_stall_reports":N}  the guest kernel's soft lockup and RCU stall reports
#   {"harness_stalled_s":S}            (from run-one.sh) seconds the environment stalled
#   {"ballast_exit":N} | {"harness_timeout":true} | {"harness_error":TEXT}
# The script exits 0 whenever it could run; judging the results is the tests' job.
#
# Mode: direct (ballast on this host) when /proc/cpuinfo has vmx or svm and
# /dev/kvm opens; nested otherwise (ballast inside an L1 test host under TCG with
# nested SVM, all scenarios in one L1 boot; the disk images become QEMU virtio-blk
# disks of L1, and ballast gets L1's /dev/vdX). BALLAST_E2E_MODE=direct|nested forces it.
# Other knobs: BALLAST_E2E_TIMEOUT (seconds per scenario, default 900: limit-cycles took 310-441 s pinned),
# BALLAST_GUEST_CMDLINE, BALLAST_L1_MEMORY (MiB), BALLAST_E2E_OUT (log folder),
# BALLAST_E2E_KEEP_DISKS=1 (keep the disk images next to the logs); nested mode:
# BALLAST_L1_QEMU, BALLAST_L1_CMDLINE, BALLAST_L1_SMP (tests/harness/l1-lib.sh),
# BALLAST_L1_SUITE / BALLAST_L1_KERNEL_PKG (L1's kernel, resources/fetch.sh),
# BALLAST_L1_TRACE (trace events L1 records, printed when a guest dies: l1-init),
# BALLAST_L1_KVM and BALLAST_L1_KVM_AMD (kvm and kvm-amd module parameters in L1, e.g.
# tdp_mmu=0, npt=0), BALLAST_L1_CPUS (the L1 CPUs each scenario's processes run on,
# default 1; empty: all of them),
# BALLAST_L2_VMM=qemu (QEMU microvm runs the guests instead of ballast: the control).
# A folder given more than once runs that many times (tests/soak/nested.sh).
# --stream copies the console to stderr as it runs; --l1-check (nested) also
# prints `ballast --help` as run inside L1, and works with no scenario at all.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=resources/lib.sh
. "$repo/resources/lib.sh"
# shellcheck source=tests/harness/l1-lib.sh
. "$here/l1-lib.sh"

ballast='' agent='' stream=0 check=0 dirs=()
while [ $# -gt 0 ]; do
    case $1 in
    --ballast) ballast=$(realpath "$2"); shift 2 ;;
    --agent) agent=$(realpath "$2"); shift 2 ;;
    --stream) stream=1; shift ;;
    --l1-check) check=1; shift ;;
    -*) die "unknown option $1" ;;
    *) [ -f "$1/guest.sh" ] || die "$1: not a scenario folder (no guest.sh)"
       dirs+=("$(realpath "$1")"); shift ;;
    esac
done
[ ${#dirs[@]} -gt 0 ] || [ "$check" = 1 ] || die "usage: $0 [--ballast PATH] [--agent PATH] [--stream] [--l1-check] SCENARIO_DIR..."

timeout=${BALLAST_E2E_TIMEOUT:-900}
cmdline=${BALLAST_GUEST_CMDLINE:-console=ttyS0 reboot=k panic=-1 rdinit=/init quiet}
mode=${BALLAST_E2E_MODE:-}
if [ -z "$mode" ]; then
    if grep -qw -e vmx -e svm /proc/cpuinfo && { : <>/dev/kvm; } 2>/dev/null; then
        mode=direct
    else
        mode=nested
    fi
fi
case $mode in
direct) log "mode: direct (ballast runs on this host's KVM)" ;;
nested) log "mode: nested (no usable hardware virtualisation here: ballast runs inside an L1 test host under TCG)" ;;
*) die "BALLAST_E2E_MODE must be direct or nested" ;;
esac

ensure_apt cpio gzip
[ "$mode" = direct ] || ensure_qemu
ensure_fetched
if [ -z "$ballast" ]; then
    bins=$("$here/build-ballast.sh") || die "building the static ballast failed (tests/harness/build-ballast.sh)"
    eval "$bins"
    ballast=$BALLAST_BIN
    agent=${agent:-$BALLAST_AGENT_BIN}
fi
[ -x "$ballast" ] || die "no ballast binary at $ballast"

out="${BALLAST_E2E_OUT:-$repo/target/e2e}/$(date +%Y%m%d-%H%M%S)-$$"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"

# The console as a person reads it: no carriage returns, no terminal escapes (the
# L1 firmware resets and clears the screen), no QEMU warnings about CPUID bits TCG lacks.
console_filter() {
    sed -u -e 's/\r$//' -e 's/\x1b\[[0-9;?]*[a-zA-Z]//g' -e 's/\x1b[a-zA-Z]//g' \
        -e "/TCG doesn't support requested feature/d"
}

json_str() { local s=${1//\\/\\\\}; s=${s//\"/\\\"}; printf '"%s"' "$s"; }

# mib SIZE: a --memory value (512M, 1G, 262144K, plain MiB) in MiB.
mib() {
    local n=${1%[KkMmGg]}
    case $1 in
    *[Kk]) echo $((n / 1024)) ;;
    *[Gg]) echo $((n * 1024)) ;;
    *) echo "$n" ;;
    esac
}

disk_root="$work/disks"
if [ "${BALLAST_E2E_KEEP_DISKS:-0}" = 1 ]; then disk_root="$out/disks"; fi
qemu_drives=()
declare -A built_disk=()

# build_disks N DIR S: builds scenario N's images (DIR/disks) into $disk_root/N/,
# writes S/disks (the --disk values, which run-one.sh resolves in L1) and
# $disk_root/N/env (DISK_<NAME>=IMG and DISK_<NAME>_SHA256 for after.sh).
build_disks() {
    local nn=$1 d=$2 s=$3 k=0 line name word ro size from gen img stage spec memo
    local dd="$disk_root/$nn" w
    mkdir -p "$dd"
    : >"$dd/env"
    : >"$s/disks"
    while IFS= read -r line || [ -n "$line" ]; do
        line=${line%%#*}
        read -ra w <<<"$line"
        [ ${#w[@]} -gt 0 ] || continue
        name=${w[0]} ro='' size='' from='' gen=''
        [[ $name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "$d/disks: a disk name is a shell variable name, not '$name'"
        for word in "${w[@]:1}"; do
            case $word in
            readonly) ro=1 ;;
            size=*) size=${word#size=} ;;
            from=*) from=${word#from=} ;;
            gen=*) gen=${word#gen=} ;;
            *) die "$d/disks: unknown word '$word' for disk $name (known: readonly size=MIB from=DIR gen=SCRIPT)" ;;
            esac
        done
        stage="$dd/$name.root" img="$dd/$name.img"
        # The same scenario folder given again (a soak) shares its read-only images.
        memo="$d|$name"
        if [ -n "$ro" ] && [ ! -f "$d/after.sh" ] && [ -n "${built_disk[$memo]:-}" ]; then
            img=${built_disk[$memo]}
            add_disk_spec
            k=$((k + 1))
            continue
        fi
        rm -rf "$stage"
        mkdir -p "$stage"
        if [ -n "$from" ]; then
            [ -d "$d/$from" ] || die "$d/disks: disk $name: no folder $from in the scenario"
            cp -a "$d/$from/." "$stage/"
        fi
        if [ -n "$gen" ]; then
            [ -f "$d/$gen" ] || die "$d/disks: disk $name: no script $gen in the scenario"
            command -v openssl >/dev/null || ensure_apt openssl
            # shellcheck disable=SC2016 # expanded by the inner bash
            (cd "$stage" && bash -e -c '. "$1"; . "$2"' gen "$here/host-lib.sh" "$d/$gen") ||
                die "$d/disks: disk $name: $gen failed"
        fi
        "$repo/resources/build-disk-image.sh" "$stage" "$img" ${size:+"$size"}
        rm -rf "$stage"
        built_disk[$memo]=$img
        add_disk_spec
        if [ -f "$d/after.sh" ]; then
            printf 'DISK_%s_SHA256=%s\n' "${name^^}" "$(sha256sum <"$img" | cut -d' ' -f1)" >>"$dd/env"
        fi
        k=$((k + 1))
    done <"$d/disks"
}

# add_disk_spec: (build_disks' locals) the --disk value of image $img, and in nested
# mode the QEMU drive that carries it into L1.
add_disk_spec() {
    if [ "$mode" = direct ]; then
        spec=$img
    else
        spec="serial:ballast-$nn-$k"
        qemu_drives+=(-drive "file=$img,format=raw,if=none,id=d$nn-$k,cache=writeback${ro:+,readonly=on}"
            -device "virtio-blk-pci,drive=d$nn-$k,serial=ballast-$nn-$k")
    fi
    echo "$spec${ro:+,readonly=on}" >>"$s/disks"
    printf 'DISK_%s=%q\n' "${name^^}" "$img" >>"$dd/env"
}

# Per-scenario inputs: scenarios/NN/{initrd.cpio.gz,args,...} (NN keeps the order in L1).
names=() max_mem=0
case $work$disk_root in *[[:space:],]*) die "the work folders ($work, $disk_root) must have no blank or comma in their paths" ;; esac
for i in "${!dirs[@]}"; do
    nn=$(printf %02d "$i")
    d=${dirs[$i]} s="$work/scenarios/$nn"
    # A folder given more than once (a soak) gets NAME, NAME.2, NAME.3, ...
    name=$(basename "$d") seen=1
    for prev in "${names[@]}"; do [ "${prev%.[0-9]*}" != "$name" ] || seen=$((seen + 1)); done
    [ "$seen" = 1 ] || name="$name.$seen"
    names+=("$name")
    mkdir -p "$s" "$out/${names[$i]}"
    guest_agent=$agent
    if [ -f "$d/agent" ]; then
        guest_agent="$(dirname "$ballast")/$(tr -d '[:space:]' <"$d/agent")"
        [ -x "$guest_agent" ] || die "$d/agent: no test agent at $guest_agent (tests/harness/build-ballast.sh builds them beside ballast)"
    fi
    "$repo/resources/build-guest-initramfs.sh" --scenario "$d/guest.sh" ${guest_agent:+--agent "$guest_agent"} -o "$s/initrd.cpio.gz"
    # ballast.args: one line of arguments; '#' lines are comments.
    { grep -v '^[[:space:]]*#' "$d/ballast.args" 2>/dev/null || true; } | tr '\n' ' ' >"$s/args"
    if [ -f "$d/cmdline" ]; then
        { grep -v '^[[:space:]]*#' "$d/cmdline" || true; } | tr '\n' ' ' >"$s/cmdline"
    fi
    [ ! -f "$d/host.sh" ] || install -m 644 "$d/host.sh" "$s/host.sh"
    if [ -f "$d/taps" ]; then
        { grep -v '^[[:space:]]*#' "$d/taps" || true; } >"$s/taps"
    fi
    [ ! -f "$d/disks" ] || build_disks "$nn" "$d" "$s"
    read -ra a <"$s/args" || true
    for j in "${!a[@]}"; do
        case ${a[$j]} in
        --memory=*) m=$(mib "${a[$j]#--memory=}") ;;
        --memory) m=$(mib "${a[$((j + 1))]}") ;;
        *) continue ;;
        esac
        [ "$m" -gt "$max_mem" ] && max_mem=$m
    done
done

# emit N STATUS [SECONDS]: the JSON stream of scenario N from its console log.
# STATUS is ballast's exit code, "timeout", or an error text.
emit() {
    local status=$2 secs=${3:-} name=${names[$1]} clog="$out/${names[$1]}/console.log"
    echo "{\"harness_mode\":\"$mode\",\"scenario\":$(json_str "$name")}"
    echo "{\"console_log\":$(json_str "$clog")}"
    [ "$mode" = direct ] || l1_facts
    grep -a 'BALLAST-RESULT {' "$clog" | sed 's/.*BALLAST-RESULT //; s/\r$//' || true
    [ -z "$secs" ] || echo "{\"harness_seconds\":$secs}"
    # The kernel's own last words when it powers off (a reset or a triple fault has none).
    if grep -aq 'reboot: Power down' "$clog"; then
        echo '{"harness_guest_poweroff":true}'
    else
        echo '{"harness_guest_poweroff":false}'
    fi
    # The guest kernel's own word that it stalled (nested TCG: README "Guest deaths").
    echo "{\"harness_guest_stall_reports\":$(grep -acE 'watchdog: BUG: soft lockup|rcu: INFO: rcu_[a-z]+ (self-)?detected stall' "$clog")}"
    case $status in
    timeout) echo '{"harness_timeout":true}' ;;
    '' | *[!0-9]*) echo "{\"harness_error\":$(json_str "$status")}" ;;
    *) echo "{\"ballast_exit\":$status}" ;;
    esac
    case $status in
    timeout) log "$name ($mode): timed out after $timeout s; console: $clog" ;;
    '' | *[!0-9]*) log "$name ($mode): $status; console: $clog" ;;
    *) log "$name ($mode): ballast exited $status after ${secs:-?} s; console: $clog" ;;
    esac
}

# run_after N: the scenario's after.sh, its output appended to the console log.
run_after() {
    local nn d=${dirs[$1]} clog="$out/${names[$1]}/console.log" rc=0
    nn=$(printf %02d "$1")
    [ -f "$d/after.sh" ] || return 0
    log "${names[$1]}: after.sh"
    # shellcheck disable=SC2016 # expanded by the inner bash
    (
        set -a
        # shellcheck source=/dev/null
        [ ! -f "$disk_root/$nn/env" ] || . "$disk_root/$nn/env"
        set +a
        cd "$d"
        PATH="$PATH:/usr/sbin:/sbin" BALLAST_SCENARIO_DIR=$d \
            bash -c '. "$1"; . "$2"' after "$here/host-lib.sh" "$d/after.sh"
    ) </dev/null >"$work/after.out" 2>&1 || rc=$?
    sed 's/^/[after] /' "$work/after.out" >>"$clog"
    echo "[after] BALLAST-RESULT {\"host_after_exit\":$rc}" >>"$clog"
}

# report RUNLOG: splits RUNLOG (run-one.sh's markers) into each scenario's console
# log, runs the after.sh scripts and prints the JSON streams.
report() {
    local runlog=$1 i n secs status
    for i in "${!dirs[@]}"; do
        n=$(printf %02d "$i")
        awk -v b="BALLAST-BEGIN $n" -v e1="BALLAST-EXIT $n " -v e2="BALLAST-TIMEOUT $n" '
            $0 == b { on = 1; next }
            on && (index($0, e1) == 1 || $0 == e2) { exit }
            on { print }' "$runlog" >"$out/${names[$i]}/console.log"
        secs=$(grep -a "^BALLAST-EXIT $n " "$runlog" | awk '{print $4}') || true
        if grep -aq "^BALLAST-TIMEOUT $n\$" "$runlog"; then
            status=timeout
        elif status=$(grep -a "^BALLAST-EXIT $n " "$runlog" | awk '{print $3}') && [ -n "$status" ]; then
            :
        elif [ "$mode" = direct ]; then
            status="run-one.sh ended without an exit marker (see $runlog)"
        elif [ "$qemu_rc" = 124 ] || [ "$qemu_rc" = 137 ]; then
            # L1's own watchdog (run-one.sh) would have ended the scenario: L1 itself hung.
            status="the L1 test host stopped answering (killed after $total s) before this scenario ended"
        else
            status="the L1 test host stopped (qemu exit $qemu_rc) before this scenario ended"
        fi
        run_after "$i"
        emit "$i" "$status" "$secs"
    done
}

if [ "$mode" = direct ]; then
    # host.sh finds `ballast` on PATH: a folder with only that in it.
    mkdir -p "$work/bin"
    ln -s "$ballast" "$work/bin/ballast"
    runlog="$out/host-console.log"
    : >"$runlog"
    for i in "${!dirs[@]}"; do
        n=$(printf %02d "$i")
        read -ra a <"$work/scenarios/$n/args" || true
        log "running ${names[$i]}: ballast run ${a[*]}"
        set +e
        timeout -k 10 $((timeout + 120)) sh "$here/run-one.sh" --ballast "$work/bin/ballast" \
            --kernel "$BALLAST_KERNEL" --cmdline "$cmdline" --timeout "$timeout" --tmp "$work/run" \
            "$n" "$work/scenarios/$n" </dev/null 2>&1 | console_filter |
            if [ "$stream" = 1 ]; then tee -a "$runlog" >&2; else cat >>"$runlog"; fi
        set -e
    done
    report "$runlog"
    exit 0
fi

# Nested: one L1 boot runs every scenario in turn. One L1 test host at a time on this
# machine (it wants both cores under TCG; two side by side only push each towards its
# timeouts): a second run waits for the first (BALLAST_L1_LOCK, default /tmp/ballast-l1.lock).
exec 9>"${BALLAST_L1_LOCK:-/tmp/ballast-l1.lock}"
if ! flock -n 9; then
    log "another L1 test host runs on this machine; waiting for it to end"
    flock 9
fi
payload="$work/payload"
mkdir -p "$payload/etc/ballast" "$payload/bin"
case ${BALLAST_L2_VMM:-ballast} in
ballast) install -m 755 "$ballast" "$payload/bin/ballast" ;;
qemu) # The control: QEMU microvm in ballast's place (scenarios without host.sh).
    install -m 755 "$here/qemu-as-ballast.sh" "$payload/bin/ballast"
    payload_add_qemu "$payload" ;;
*) die "BALLAST_L2_VMM must be ballast or qemu" ;;
esac
echo "$timeout" >"$payload/etc/ballast/timeout"
echo "$cmdline" >"$payload/etc/ballast/cmdline"
# BALLAST_L1_TRACE="kvm/kvm_exit ...": L1 records these trace events while each scenario
# runs and prints the last of them when its guest died (l1-init).
[ -z "${BALLAST_L1_TRACE:-}" ] || echo "$BALLAST_L1_TRACE" >"$payload/etc/ballast/trace"
# BALLAST_L1_KVM="tdp_mmu=0 ...", BALLAST_L1_KVM_AMD="npt=0 ...": parameters for L1's kvm
# and kvm-amd modules.
[ -z "${BALLAST_L1_KVM:-}" ] || echo "$BALLAST_L1_KVM" >"$payload/etc/ballast/kvm-params"
[ -z "${BALLAST_L1_KVM_AMD:-}" ] || echo "$BALLAST_L1_KVM_AMD" >"$payload/etc/ballast/kvm-amd-params"
# BALLAST_L1_CPUS: the L1 CPUs each scenario's processes (ballast, host.sh) are pinned to
# (taskset -c). Default: L1's CPU 1 alone. With the guest's vCPUs spread over both of L1's
# CPUs, guests died of spurious page faults under QEMU's multi-threaded TCG (one scenario
# boot in four to six; README "Guest deaths under nested TCG"); with every change to the
# guest's nested page tables made on the CPU that runs the guest, no triple fault in 54 boots
# (one L1 lockup inside KVM_RUN during a guest boot remains, 2026-12-03). The
# price is speed: a 2-vCPU guest shares one CPU. Empty: no pinning.
l1_cpus=${BALLAST_L1_CPUS-1}
[ -z "$l1_cpus" ] || echo "$l1_cpus" >"$payload/etc/ballast/cpus"
[ "$check" = 0 ] || touch "$payload/etc/ballast/check"
[ ${#dirs[@]} -eq 0 ] || mv "$work/scenarios" "$payload/scenarios"
"$here/build-l1-initramfs.sh" --payload "$payload" -o "$work/l1.cpio.gz"

# L1 needs room for the guest's RAM besides its own kernel and initramfs.
l1_mem=${BALLAST_L1_MEMORY:-$((max_mem + 1024 > 2048 ? max_mem + 1024 : 2048))}
l1_log="$out/l1-console.log"
total=$((${#dirs[@]} * timeout + 300))
log "booting the L1 test host (${l1_mem} MiB, $((${#qemu_drives[@]} / 4)) disk(s)); its console: $l1_log"
set +e
timeout -k 10 "$total" bash -c "$(declare -f l1_qemu); l1_qemu \"\$@\"" l1 \
    "$l1_mem" "$work/l1.cpio.gz" -nic none "${qemu_drives[@]}" </dev/null 2>&1 |
    console_filter |
    if [ "$stream" = 1 ]; then tee "$l1_log" >&2; else cat >"$l1_log"; fi
qemu_rc=${PIPESTATUS[0]}
set -e

l1_facts() {
    echo "{\"l1_console_log\":$(json_str "$l1_log")}"
    grep -a 'BALLAST-L1 {' "$l1_log" | sed 's/.*BALLAST-L1 //' || true
    echo "{\"l1_qemu_exit\":$qemu_rc}"
}

if [ ${#dirs[@]} -eq 0 ]; then # --l1-check alone
    echo "{\"harness_mode\":\"nested\",\"scenario\":null}"
    echo "{\"console_log\":$(json_str "$l1_log")}"
    l1_facts
    exit 0
fi
report "$l1_log"
