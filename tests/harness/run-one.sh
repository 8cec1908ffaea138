#!/bin/sh
# Runs one scenario's ballast, and its host.sh beside it when it has one:
#   run-one.sh --ballast BIN --kernel K --cmdline C --timeout S --tmp DIR N SCENARIO_DIR
# It runs inside the L1 test host (busybox sh, from l1-init) in nested mode and on the
# host (from run-scenario.sh) in direct mode, so it is POSIX sh.
#
# SCENARIO_DIR holds initrd.cpio.gz and args (one line of `ballast run` arguments), and
# optionally:
#   cmdline   words appended to the guest kernel command line C
#   disks     one --disk value a line, in order; `serial:S[,OPTS]` stands for the block
#             device whose serial is S (the scenario's images, as the L1 test host
#             sees them: QEMU virtio-blk-pci disks)
#   host.sh   run while ballast runs, with host-lib.sh (next to this script) sourced
#             first; ballast then gets --api-sock, and a FIFO as its stdin
#   taps      TAP interfaces to make before ballast starts and delete after it ends,
#             `NAME ADDRESS/PREFIX` a line (ballast attaches to a TAP, never makes one)
#
# stdout, in whole lines (two writers never cut each other's lines):
#   BALLAST-BEGIN N
#   ballast's stdout and stderr: the guest console
#   [host] ...                    host.sh's output, as it comes
#   [harness] ...                 what this script has to say
#   BALLAST-RESULT {"harness_stalled_s":S}  seconds the environment stalled (see the watchdog)
#   BALLAST-RESULT {"host_exit":RC}      when there is a host.sh
#   BALLAST-EXIT N CODE SECONDS  |  BALLAST-TIMEOUT N
# Exit status: ballast's, or 1 after a timeout or a harness failure.
#
# A host.sh that fails (exits non-zero) gives ballast 30 s (BALLAST_HOST_FAIL_GRACE_S)
# to end on its own, then ballast gets SIGTERM (and SIGKILL 15 s later): the guest may
# be waiting for the host. A host.sh still running 10 s after ballast exits is stopped,
# with everything it started (it runs in a session of its own). A ballast that outlives
# the SIGKILL of the timeout by 30 s (stuck in the kernel) is reported and left behind.
set -u
ballast='' kernel='' cmdline='' timeout=900 tmp=''
while [ $# -gt 2 ]; do
    case $1 in
    --ballast) ballast=$2 ;;
    --kernel) kernel=$2 ;;
    --cmdline) cmdline=$2 ;;
    --timeout) timeout=$2 ;;
    --tmp) tmp=$2 ;;
    *) echo "run-one.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift 2
done
if [ $# -ne 2 ] || [ -z "$ballast" ] || [ -z "$kernel" ] || [ -z "$tmp" ]; then
    echo "usage: $0 --ballast BIN --kernel K --cmdline C --timeout S --tmp DIR N SCENARIO_DIR" >&2
    exit 2
fi
n=$1 d=$2
lib="$(cd "$(dirname "$0")" && pwd)/host-lib.sh"
bindir=$(cd "$(dirname "$ballast")" && pwd)

now() { cut -d' ' -f1 /proc/uptime; }
secs() { cut -d. -f1 /proc/uptime; }
say() { printf '[harness] %s\n' "$*"; }
# line_tee FILE PREFIX: copies stdin to stdout, each line PREFIX'ed and written in one
# write (so two of them writing to one console never cut each other's lines), without
# carriage returns; and to FILE (unless it is empty) as it comes. awk does it where
# it can (busybox in the L1 test host, gawk); mawk, Debian's awk, either reads its
# input in blocks or, with -W interactive, writes a line in pieces: a shell loop then.
line_tee() {
    if awk -W version </dev/null 2>&1 | grep -q '^mawk'; then
        cr=$(printf '\r')
        while IFS= read -r line || [ -n "$line" ]; do
            line=${line%"$cr"}
            printf '%s%s\n' "$2" "$line"
            [ -z "$1" ] || printf '%s\n' "$line" >>"$1"
        done
    else
        awk -v f="$1" -v p="$2" '{ sub(/\r$/, ""); print p $0; fflush()
            if (f != "") { print >>f; fflush(f) } }'
    fi
}

# taps_up, taps_down: the scenario's TAP interfaces, with iproute2 or busybox's tunctl.
taps_up() {
    [ -f "$d/taps" ] || return 0
    while read -r tap addr; do
        [ -n "$tap" ] || continue
        if { ip tuntap add dev "$tap" mode tap 2>/dev/null || tunctl -t "$tap" >/dev/null; } &&
            ip addr add "$addr" dev "$tap" && ip link set "$tap" up; then
            say "TAP interface $tap is up with $addr"
        else
            say "cannot make the TAP interface $tap with $addr (is the tun module loaded?)"
            return 1
        fi
    done <"$d/taps"
}
taps_down() {
    [ -f "$d/taps" ] || return 0
    while read -r tap _; do
        [ -n "$tap" ] || continue
        ip tuntap del dev "$tap" mode tap 2>/dev/null || tunctl -d "$tap" >/dev/null 2>&1
    done <"$d/taps"
}

printf '\nBALLAST-BEGIN %s\n' "$n"
t0=$(now)
finish() { # finish RC: the closing marker
    taps_down
    if [ -e "$tmp/timedout" ]; then
        printf '\nBALLAST-TIMEOUT %s\n' "$n"
        exit 1
    fi
    printf '\nBALLAST-EXIT %s %s %s\n' "$n" "$1" "$(awk -v a="$t0" '{ printf "%.1f", $1 - a }' /proc/uptime)"
    exit "$1"
}

rm -rf "$tmp"
mkdir -p "$tmp" || finish 1

# The args file and the disks are split into words, never globbed.
set -f
args=$(cat "$d/args" 2>/dev/null)
[ -f "$d/cmdline" ] && cmdline="$cmdline $(cat "$d/cmdline")"
if [ -f "$d/disks" ]; then
    while read -r spec; do
        [ -n "$spec" ] || continue
        case $spec in
        serial:*)
            s=${spec#serial:} opts=''
            case $s in *,*) opts=,${s#*,} s=${s%%,*} ;; esac
            dev=''
            set +f
            for f in /sys/block/*/serial; do
                if [ "$(cat "$f" 2>/dev/null)" = "$s" ]; then
                    dev=${f%/serial}
                    dev=/dev/${dev##*/}
                    break
                fi
            done
            set -f
            if [ -z "$dev" ]; then
                say "no block device has the serial $s (is virtio_blk loaded in the L1 test host?)"
                finish 1
            fi
            spec=$dev$opts
            ;;
        esac
        args="$args --disk $spec"
    done <"$d/disks"
fi

taps_up || finish 1

stdin=/dev/null
if [ -f "$d/host.sh" ]; then
    # A FIFO as stdin, held open here for writing so ballast never reads its end.
    stdin=$tmp/stdin
    mkfifo "$stdin" || finish 1
    exec 3<>"$stdin"
    args="$args --api-sock $tmp/api.sock"
fi

# ballast's output, through line tees: to stdout and to the console file, one write
# per line, so host.sh's lines land between the guest's lines and never inside one.
# stdout (the guest's COM1) and stderr (ballast's log) get a tee each: a log line
# written while the guest is half-way through a line then cannot split it.
console=$tmp/console
: >"$console"
mkfifo "$tmp/out" "$tmp/err" || finish 1
line_tee "$console" '' <"$tmp/out" &
tee_pid=$!
line_tee "$console" '' <"$tmp/err" &
err_tee_pid=$!

# shellcheck disable=SC2086 # word splitting of the args is the point
(
    "$ballast" run --kernel "$kernel" --initrd "$d/initrd.cpio.gz" --cmdline "$cmdline" \
        $args <"$stdin" >"$tmp/out" 2>"$tmp/err" &
    echo $! >"$tmp/ballast.pid"
    wait $!
    echo $? >"$tmp/ballast.rc.tmp" && mv "$tmp/ballast.rc.tmp" "$tmp/ballast.rc"
) &
set +f
while [ ! -s "$tmp/ballast.pid" ]; do sleep 0.05; done
bpid=$(cat "$tmp/ballast.pid")

# The watchdog: SIGKILL once ballast has had $timeout seconds. Under nested TCG the L1
# CPU that runs a scenario sometimes stops for minutes (README "Guest deaths under nested
# TCG": L1's and the guest's kernels report a soft lockup afterwards), and everything on
# it stops too: ballast, host.sh, this watchdog. That time nobody could use is not
# counted: the watchdog looks at the clock every second, and a look that comes 10 s or
# more late is a stall, whose length goes into $tmp/stalled (the total so far, which
# host-lib.sh's waits also leave out of their bounds) and into a [harness] line.
echo 0 >"$tmp/stalled"
(
    trap 'exit 0' TERM
    start=$(secs) last=$(secs) stalled=0
    while [ $(($(secs) - start - stalled)) -lt "$timeout" ]; do
        sleep 1
        t=$(secs)
        late=$((t - last - 1))
        last=$t
        [ "$late" -ge 10 ] || continue
        stalled=$((stalled + late))
        echo "$stalled" >"$tmp/stalled.tmp" && mv "$tmp/stalled.tmp" "$tmp/stalled"
        say "the watchdog did not run for $late s (the environment stalled; $stalled s in all): not counted against the bounds"
    done
    touch "$tmp/timedout"
    say "ballast still runs after $timeout s (and $stalled s of stalls): SIGKILL"
    kill -9 "$bpid" 2>/dev/null
) &
dog=$!

hpg=''
if [ -f "$d/host.sh" ]; then
    mkfifo "$tmp/host.out" || finish 1
    line_tee '' '[host] ' <"$tmp/host.out" &
    hawk=$!
    (
        export BALLAST_PID="$bpid" BALLAST_API_SOCK="$tmp/api.sock" BALLAST_CONSOLE="$console" \
            BALLAST_STDIN="$tmp/stdin" BALLAST_SCENARIO_DIR="$d" BALLAST_STALLED="$tmp/stalled" \
            PATH="$bindir:$PATH"
        # shellcheck disable=SC2016 # expanded by the inner sh
        setsid sh -c 'echo $$ >"$1/host.pid"; cd "$2" || exit 1; . "$3"; . "$2/host.sh"' \
            host "$tmp" "$d" "$lib" </dev/null >"$tmp/host.out" 2>&1
        echo $? >"$tmp/host.rc.tmp" && mv "$tmp/host.rc.tmp" "$tmp/host.rc"
    ) &
fi

# Wait for ballast; a failed host.sh stops it after a grace period.
host_done=0 stop_at='' killed=0 dead_at='' stuck=0
while [ ! -e "$tmp/ballast.rc" ]; do
    # A process that outlives SIGKILL is stuck in the kernel (KVM under nested
    # virtualisation can do that): say where, and leave it.
    if [ -e "$tmp/timedout" ]; then
        [ -n "$dead_at" ] || dead_at=$(($(secs) + 30))
        if [ "$(secs)" -ge "$dead_at" ]; then
            say "ballast (PID $bpid) is still there 30 s after SIGKILL; its threads (state, wchan, name):"
            for t in /proc/"$bpid"/task/*; do
                say "  ${t##*/}: $(cut -d' ' -f3 "$t/stat" 2>/dev/null) $(cat "$t/wchan" 2>/dev/null) $(cat "$t/comm" 2>/dev/null)"
            done
            stuck=1
            break
        fi
    fi
    if [ -f "$d/host.sh" ] && [ "$host_done" = 0 ] && [ -e "$tmp/host.rc" ]; then
        host_done=1
        hrc=$(cat "$tmp/host.rc")
        if [ "$hrc" != 0 ]; then
            grace=${BALLAST_HOST_FAIL_GRACE_S:-30}
            say "host.sh exited $hrc; ballast gets $grace s to end on its own"
            stop_at=$(($(secs) + grace))
        fi
    fi
    if [ -n "$stop_at" ] && [ "$(secs)" -ge "$stop_at" ]; then
        if [ "$killed" = 0 ]; then
            say "stopping ballast (SIGTERM)"
            kill -TERM "$bpid" 2>/dev/null
            killed=1 stop_at=$(($(secs) + 15))
        else
            say "ballast still runs: SIGKILL"
            kill -9 "$bpid" 2>/dev/null
            stop_at=''
        fi
    fi
    sleep 0.3
done
kill "$dog" 2>/dev/null
wait "$dog"
echo "BALLAST-RESULT {\"harness_stalled_s\":$(cat "$tmp/stalled")}"
if [ "$stuck" = 1 ]; then
    rc=1
    kill "$tee_pid" "$err_tee_pid" 2>/dev/null # ballast holds its end of the pipes open
else
    rc=$(cat "$tmp/ballast.rc")
    wait "$tee_pid" "$err_tee_pid"
fi
exec 3>&-

if [ -f "$d/host.sh" ]; then
    end=$(($(secs) + 10))
    while [ ! -e "$tmp/host.rc" ] && [ "$(secs)" -lt "$end" ]; do sleep 0.2; done
    hpg=$(cat "$tmp/host.pid" 2>/dev/null)
    if [ ! -e "$tmp/host.rc" ]; then
        say "host.sh still runs 10 s after ballast exited: stopping it"
    fi
    # Whatever host.sh left behind goes too (its session's process group).
    if [ -n "$hpg" ]; then
        kill -TERM -"$hpg" 2>/dev/null
        sleep 0.2
        kill -9 -"$hpg" 2>/dev/null
    fi
    while [ ! -e "$tmp/host.rc" ]; do sleep 0.1; done
    wait "$hawk"
    echo "BALLAST-RESULT {\"host_exit\":$(cat "$tmp/host.rc")}"
fi
finish "$rc"
