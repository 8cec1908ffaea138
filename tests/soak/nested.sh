#!/usr/bin/env bash
# Soak: boots scenarios many times per configuration and counts how guests die.
#   tests/soak/nested.sh N [CONFIG...]
#
# N scenario boots per configuration, in as few L1 test host boots as it takes (a batch
# of BALLAST_SOAK_BATCH, default 16, per L1 boot; an L1 that dies ends its batch and the
# boots it never started run in the next). A CONFIG is comma-separated key=value words,
# `harness` (the default) being the harness's own configuration:
#   vcpus=N          the guest's vCPUs (replaces --vcpus in each scenario's ballast.args)
#   tsc=on|off       offer the TSC-deadline timer (ballast run --tsc-deadline)
#   thp=on|off       transparent huge pages for guest RAM (ballast run --thp)
#   l1=stable|backports   L1's kernel: the guest's (Debian stable) or bookworm-backports'
#   qemu=PATH        the outer QEMU (BALLAST_L1_QEMU)
#   smp=N            L1's vCPUs (BALLAST_L1_SMP)
#   accel=A          the outer QEMU's -accel, '+' for a comma (tcg+thread=single)
#   l1cmdline=WORDS  words added to L1's kernel command line, '+' for a blank
#                    (transparent_hugepage=never+sysctl.vm.compaction_proactiveness=0)
#   l1mem=MIB        L1's RAM (BALLAST_L1_MEMORY)
#   kvm=P            kvm's parameters in L1, '+' for a blank (tdp_mmu=0: KVM's older MMU)
#   kvmamd=P         kvm-amd's parameters in L1, '+' for a blank (npt=0: shadow paging)
#   cpus=LIST|all    L1 CPUs each scenario's processes (ballast, host.sh) are pinned to
#                    (taskset -c LIST; BALLAST_L1_CPUS, the harness pins to CPU 1 by
#                    default); all: no pinning
#   ballast=PATH     another ballast binary (an experimental build) for this configuration
#   vmm=ballast|qemu the guest's VMM inside L1: ballast, or QEMU microvm as the control
#                    (tests/harness/qemu-as-ballast.sh; scenarios without host.sh only)
#   trace=1          L1 records KVM trace events and prints them when a guest dies
#   cmdline=WORDS    words added to the guest command line ('+' for a blank)
#   scenarios=A+B    the scenarios to cycle through (default limit-reclaim+agent-deactivate-file),
#                    from tests/scenarios or tests/soak/scenarios (guest-churn: memory and
#                    disk churn that needs nothing from the host, for vmm=qemu); `all`: every
#                    folder of tests/scenarios, in turn (the whole suite, as `make test` runs it)
#
# Prints a markdown table (one row per configuration) and writes it, with every boot's
# verdict (boots.jsonl) and the harness logs, under target/soak/<date>/.
# What a death is: `triple fault` (the guest reset, ballast logged KVM_EXIT_SHUTDOWN),
# `stall` (an RCU or soft-lockup report on the guest console), `L1 death` (the L1 test
# host's kernel died or hung under the scenario), `timeout`; any other failed check
# is `other`. The phase a boot died in: `boot` (before the guest's init spoke), `balloon`
# (after the first balloon or limit change), `load` otherwise.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=resources/lib.sh
. "$repo/resources/lib.sh"

[ $# -ge 1 ] && [[ $1 =~ ^[1-9][0-9]*$ ]] || die "usage: $0 N [CONFIG...] (see the comment at the top)"
n=$1
shift
configs=("$@")
[ ${#configs[@]} -gt 0 ] || configs=(harness)
batch=${BALLAST_SOAK_BATCH:-16}

out="$repo/target/soak/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out"
bins=$("$repo/tests/harness/build-ballast.sh") || die "building ballast failed"
eval "$bins"
(cd "$repo" && cargo build -q -p ballast-e2e --bin e2e-verdict) || die "building e2e-verdict failed"
verdict="$repo/target/debug/e2e-verdict"

# scenario_copy SRC DEST VCPUS THP TSC EXTRA_CMDLINE: SRC's folder with the overrides in place.
scenario_copy() {
    local src=$1 dst=$2 vcpus=$3 thp=$4 tsc=$5 extra=$6
    rm -rf "$dst"
    # -L: a scenario may share files with another through symlinks (limit-reclaim-fpr,
    # the soak's balloon-cycles), which would dangle in the copy.
    cp -rL "$src" "$dst"
    if [ -n "$vcpus" ]; then
        if grep -q -- '--vcpus' "$dst/ballast.args"; then
            sed -i -E "s/--vcpus[ =][0-9]+/--vcpus $vcpus/" "$dst/ballast.args"
        else
            echo "--vcpus $vcpus" >>"$dst/ballast.args"
        fi
    fi
    [ -z "$thp" ] || echo "--thp $thp" >>"$dst/ballast.args"
    [ -z "$tsc" ] || echo "--tsc-deadline $tsc" >>"$dst/ballast.args"
    [ -z "$extra" ] || echo "$extra" >>"$dst/cmdline"
}

# classify VERDICT_LINE: "outcome phase" of one boot.
classify() {
    local line=$1 log failure outcome phase=load
    log=$(jq -r '.console_log // ""' <<<"$line")
    failure=$(jq -r '.failure // ""' <<<"$line")
    if [ "$(jq -r .pass <<<"$line")" = true ]; then
        outcome=pass
    elif [ -s "$log" ] && grep -aq 'triple fault' "$log"; then
        outcome=triple_fault
    elif [ -s "$log" ] && grep -aqE 'rcu: .*(stall|detected|wakeup didn)|soft lockup|hung_task' "$log"; then
        outcome=stall
    elif [[ $failure == *"L1 test host stopped"* ]]; then
        [ -s "$log" ] || { echo "not_run -"; return; }
        outcome=l1_death
    elif [[ $failure == *"harness_timeout"* ]]; then
        outcome=timeout
    else
        outcome=other
    fi
    if [ "$outcome" != pass ]; then
        if ! grep -aq '^ballast-init:' "$log" 2>/dev/null; then
            phase=boot
        elif grep -aqiE 'limit set|balloon (set|target)|inflat|SetBalloon|SetLimit' "$log"; then
            phase=balloon
        fi
    else
        phase=-
    fi
    echo "$outcome $phase"
}

ensure_apt jq
table="$out/soak.md"
{
    echo "| configuration | boots | passed | triple faults | stalls | L1 deaths | timeouts | other | died in (boot/load/balloon) |"
    echo "|---|---|---|---|---|---|---|---|---|"
} >"$table"

for config in "${configs[@]}"; do
    vcpus='' tsc='' thp='' l1='' qemu='' smp='' accel='' l1cmdline='' l1mem='' kvm='' kvmamd='' cpus='' vmm=ballast trace='' extra='' bin=$BALLAST_BIN
    scen=limit-reclaim+agent-deactivate-file
    IFS=, read -ra words <<<"$config"
    for w in "${words[@]}"; do
        case $w in
        harness) ;;
        vcpus=*) vcpus=${w#*=} ;;
        tsc=*) tsc=${w#*=} ;;
        thp=*) thp=${w#*=} ;;
        l1=*) l1=${w#*=} ;;
        qemu=*) qemu=${w#*=} ;;
        smp=*) smp=${w#*=} ;;
        accel=*) accel=${w#*=} accel=${accel//+/,} ;;
        l1cmdline=*) l1cmdline=${w#*=} l1cmdline=${l1cmdline//+/ } ;;
        l1mem=*) l1mem=${w#*=} ;;
        kvmamd=*) kvmamd=${w#*=} kvmamd=${kvmamd//+/ } ;;
        kvm=*) kvm=${w#*=} kvm=${kvm//+/ } ;;
        cpus=*) cpus=${w#*=} ;;
        vmm=*) vmm=${w#*=} ;;
        ballast=*) bin=${w#*=} ;;
        trace=*) trace=${w#*=} ;;
        cmdline=*) extra=${w#*=} extra=${extra//+/ } ;;
        scenarios=*) scen=${w#*=} ;;
        *) die "unknown configuration word '$w'" ;;
        esac
    done
    cdir="$out/${config//[^A-Za-z0-9=.+_-]/_}"
    mkdir -p "$cdir/scenarios"
    if [ "$scen" = all ]; then
        scen=$(cd "$repo/tests/scenarios" && for d in */guest.sh; do printf '%s+' "${d%/guest.sh}"; done)
    fi
    IFS=+ read -ra names <<<"$scen"
    copies=()
    for s in "${names[@]}"; do
        src="$repo/tests/scenarios/$s"
        [ -d "$src" ] || src="$here/scenarios/$s"
        [ -d "$src" ] || die "no scenario $s in tests/scenarios or tests/soak/scenarios"
        scenario_copy "$src" "$cdir/scenarios/$s" "$vcpus" "$thp" "$tsc" "$extra"
        copies+=("$cdir/scenarios/$s")
    done
    env=(BALLAST_E2E_MODE=nested BALLAST_E2E_OUT="$cdir/runs")
    [ -z "$qemu" ] || env+=(BALLAST_L1_QEMU="$qemu")
    [ -z "$smp" ] || env+=(BALLAST_L1_SMP="$smp")
    [ -z "$accel" ] || env+=(BALLAST_L1_ACCEL="$accel")
    [ -z "$l1mem" ] || env+=(BALLAST_L1_MEMORY="$l1mem")
    [ -z "$kvmamd" ] || env+=(BALLAST_L1_KVM_AMD="$kvmamd")
    [ -z "$kvm" ] || env+=(BALLAST_L1_KVM="$kvm")
    case $cpus in
    '') ;;
    all) env+=(BALLAST_L1_CPUS=) ;;
    *) env+=(BALLAST_L1_CPUS="$cpus") ;;
    esac
    case $l1 in
    '' | stable) ;;
    backports) env+=(BALLAST_L1_SUITE=bookworm-backports) ;;
    *) die "l1= takes stable or backports" ;;
    esac
    [ "$trace" != 1 ] || env+=(BALLAST_L1_TRACE="kvm/kvm_exit kvm/kvm_inj_exception kvm/kvm_userspace_exit kvm/kvm_unmap_hva_range migrate/mm_migrate_pages compaction/mm_compaction_migratepages")
    l1cmdline="$l1cmdline${trace:+ ftrace_dump_on_oops}"
    [ -z "$l1cmdline" ] || env+=(BALLAST_L1_CMDLINE="$l1cmdline")
    ballast_arg=(--ballast "$bin" --agent "$BALLAST_AGENT_BIN")
    [ "$vmm" = ballast ] || env+=(BALLAST_L2_VMM="$vmm")

    done_boots=0 next=0 batches=0
    declare -A count=() phases=()
    while [ "$done_boots" -lt "$n" ]; do
        dirs=()
        for ((i = 0; i < batch && done_boots + i < n; i++)); do
            dirs+=("${copies[$(((next + i) % ${#copies[@]}))]}")
        done
        log "$config: boots $((done_boots + 1))..$((done_boots + ${#dirs[@]})) of $n in one L1 boot"
        batches=$((${batches:-0} + 1))
        # The outer QEMU logs L1's registers when L1 resets (a triple fault of L1 itself).
        env "${env[@]}" BALLAST_L1_QEMU_ARGS="-d cpu_reset,guest_errors -D $cdir/qemu-$batches.log" \
            "$repo/tests/harness/run-scenario.sh" "${ballast_arg[@]}" "${dirs[@]}" \
            >"$cdir/stream.json" 2>>"$cdir/harness.log" || die "the harness failed (see $cdir/harness.log)"
        "$verdict" "${dirs[@]}" <"$cdir/stream.json" >"$cdir/verdicts.jsonl" ||
            die "cannot judge $cdir/stream.json"
        ran=0
        while IFS= read -r line; do
            read -r outcome phase < <(classify "$line")
            [ "$outcome" != not_run ] || continue
            ran=$((ran + 1))
            count[$outcome]=$((${count[$outcome]:-0} + 1))
            [ "$phase" = - ] || phases[$phase]=$((${phases[$phase]:-0} + 1))
            jq -c --arg config "$config" --arg outcome "$outcome" --arg phase "$phase" \
                '. + {config: $config, outcome: $outcome, phase: $phase}' <<<"$line" >>"$out/boots.jsonl"
            [ "$outcome" = pass ] || log "$config: $(jq -r .scenario <<<"$line") died: $outcome in $phase ($(jq -r .console_log <<<"$line"))"
        done <"$cdir/verdicts.jsonl"
        [ "$ran" -gt 0 ] || die "an L1 boot ran no scenario at all (see $cdir/runs)"
        done_boots=$((done_boots + ran))
        next=$((next + ran))
    done
    row="| $config | $done_boots | ${count[pass]:-0} | ${count[triple_fault]:-0} | ${count[stall]:-0} | ${count[l1_death]:-0} | ${count[timeout]:-0} | ${count[other]:-0} | ${phases[boot]:-0}/${phases[load]:-0}/${phases[balloon]:-0} |"
    echo "$row" >>"$table"
    log "$row"
    unset count phases
done
cat "$table"
log "table: $table; every boot: $out/boots.jsonl"
