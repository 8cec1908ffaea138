#!/usr/bin/env bash
# Runs scenarios end to end:
#   run-scenario.sh [--ballast PATH] [--agent PATH] [--stream] [--l1-check] SCENARIO_DIR...
#
# A scenario is a folder with guest.sh (run in the guest as /scenario.sh),
# ballast.args (extra `ballast run` arguments) and expect.json (read by the Rust
# tests, not here). For each scenario, stdout gets one stream of JSON lines:
#   {"harness_mode":"direct"|"nested","scenario":NAME}
#   {"console_log":PATH}               the guest's console (plus ballast's stderr)
#   {"l1_...":...}                     nested only: facts about the L1 test host
#   {...}                              every BALLAST-RESULT payload the guest printed
#   {"harness_seconds":S}              how long the ballast run took (wall clock)
#   {"ballast_exit":N} | {"harness_timeout":true} | {"harness_error":TEXT}
# The script exits 0 whenever it could run; judging the results is the tests' job.
#
# Mode: direct (ballast on this host) when /proc/cpuinfo has vmx or svm and
# /dev/kvm opens; nested otherwise (ballast inside an L1 test host under TCG with
# nested SVM, all scenarios in one L1 boot). BALLAST_E2E_MODE=direct|nested forces it.
# Other knobs: BALLAST_E2E_TIMEOUT (seconds per scenario, default 600),
# BALLAST_GUEST_CMDLINE, BALLAST_L1_MEMORY (MiB), BALLAST_E2E_OUT (log folder).
# --stream copies the console to stderr as it runs; --l1-check (nested) also
# prints `ballast --help` as run inside L1, and works with no scenario at all.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=resources/lib.sh
. "$repo/resources/lib.sh"

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

timeout=${BALLAST_E2E_TIMEOUT:-600}
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
[ "$mode" = direct ] || ensure_apt qemu-system-x86
ensure_fetched
if [ -z "$ballast" ]; then
    eval "$("$here/build-ballast.sh")"
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

# Per-scenario inputs: scenarios/NN/{initrd.cpio.gz,args} (NN keeps the order in L1).
names=() max_mem=0
for i in "${!dirs[@]}"; do
    d=${dirs[$i]} s="$work/scenarios/$(printf %02d "$i")"
    names+=("$(basename "$d")")
    mkdir -p "$s" "$out/${names[$i]}"
    "$repo/resources/build-guest-initramfs.sh" --scenario "$d/guest.sh" ${agent:+--agent "$agent"} -o "$s/initrd.cpio.gz"
    # ballast.args: one line of arguments; '#' lines are comments.
    { grep -v '^[[:space:]]*#' "$d/ballast.args" 2>/dev/null || true; } | tr '\n' ' ' >"$s/args"
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

if [ "$mode" = direct ]; then
    for i in "${!dirs[@]}"; do
        s="$work/scenarios/$(printf %02d "$i")" clog="$out/${names[$i]}/console.log"
        read -ra a <"$s/args" || true
        log "running ${names[$i]}: ballast run ${a[*]}"
        t0=$SECONDS
        set +e
        timeout -k 10 "$timeout" "$ballast" run --kernel "$BALLAST_KERNEL" --initrd "$s/initrd.cpio.gz" \
            --cmdline "$cmdline" "${a[@]}" </dev/null 2>&1 | console_filter |
            if [ "$stream" = 1 ]; then tee "$clog" >&2; else cat >"$clog"; fi
        rc=${PIPESTATUS[0]}
        set -e
        [ "$rc" = 124 ] || [ "$rc" = 137 ] && rc=timeout
        emit "$i" "$rc" $((SECONDS - t0))
    done
    exit 0
fi

# Nested: one L1 boot runs every scenario in turn.
payload="$work/payload"
mkdir -p "$payload/etc/ballast" "$payload/bin"
install -m 755 "$ballast" "$payload/bin/ballast"
echo "$timeout" >"$payload/etc/ballast/timeout"
echo "$cmdline" >"$payload/etc/ballast/cmdline"
[ "$check" = 0 ] || touch "$payload/etc/ballast/check"
[ ${#dirs[@]} -eq 0 ] || mv "$work/scenarios" "$payload/scenarios"
"$here/build-l1-initramfs.sh" --payload "$payload" -o "$work/l1.cpio.gz"

# L1 needs room for the guest's RAM besides its own kernel and initramfs.
l1_mem=${BALLAST_L1_MEMORY:-$((max_mem + 1024 > 2048 ? max_mem + 1024 : 2048))}
l1_log="$out/l1-console.log"
total=$(((${#dirs[@]} + 1) * timeout + 300))
log "booting the L1 test host (${l1_mem} MiB); its console: $l1_log"
set +e
timeout -k 10 "$total" qemu-system-x86_64 -M q35 -accel tcg -cpu EPYC,+svm -smp 2 -m "$l1_mem" \
    -kernel "$BALLAST_KERNEL" -initrd "$work/l1.cpio.gz" \
    -append "console=ttyS0 panic=-1 rdinit=/init quiet" -nographic -no-reboot -nic none </dev/null 2>&1 |
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
for i in "${!dirs[@]}"; do
    n=$(printf %02d "$i")
    awk -v b="BALLAST-BEGIN $n" -v e1="BALLAST-EXIT $n " -v e2="BALLAST-TIMEOUT $n" '
        $0 == b { on = 1; next }
        on && (index($0, e1) == 1 || $0 == e2) { exit }
        on { print }' "$l1_log" >"$out/${names[$i]}/console.log"
    secs=$(grep -a "^BALLAST-EXIT $n " "$l1_log" | awk '{print $4}') || true
    if grep -aq "^BALLAST-TIMEOUT $n\$" "$l1_log"; then
        status=timeout
    elif status=$(grep -a "^BALLAST-EXIT $n " "$l1_log" | awk '{print $3}') && [ -n "$status" ]; then
        :
    elif [ "$qemu_rc" = 124 ] || [ "$qemu_rc" = 137 ]; then
        status=timeout
    else
        status="the L1 test host stopped (qemu exit $qemu_rc) before this scenario ended"
    fi
    emit "$i" "$status" "$secs"
done
