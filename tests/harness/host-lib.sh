# shellcheck shell=sh
# Helpers for a scenario's host-side scripts. The harness sources this file before
#   host.sh    run on the host side of ballast while ballast runs (inside the L1 test
#              host in nested mode, under busybox sh), by tests/harness/run-one.sh;
#   after.sh   run on the real host once the run is over (DISK_<NAME> name the images);
#   gen=       disk generators (see run-scenario.sh), run in the folder that becomes
#              the disk's root.
# POSIX sh: busybox sh, dash and bash all run it.
#
# What host.sh gets from run-one.sh:
#   BALLAST_PID       ballast's process ID
#   BALLAST_API_SOCK  its --api-sock (so `ballast status --json` needs no option)
#   BALLAST_CONSOLE   a file that receives the guest console, line by line, as it runs
#   BALLAST_STDIN     the FIFO that is ballast's stdin (the guest's COM1 input)
#   PATH              starts with the folder holding `ballast`

# host_result KEY VALUE...: a result line the harness collects like the guest's
# results (keys start with host_ by convention). VALUE is written as it is when it
# is already JSON (a number, true, false, null, a "string", an object or an array);
# anything else becomes a JSON string. The same rules as the guest's `result`.
host_result() {
    [ $# -ge 1 ] || { echo "usage: host_result KEY VALUE..." >&2; return 2; }
    _hr_key=$1
    shift
    _hr_v="$*"
    case $_hr_v in
    true | false | null | \"*\" | \{*\} | \[*\]) ;;
    *)
        if ! printf '%s\n' "$_hr_v" | grep -Eq '^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$'; then
            _hr_v="\"$(printf '%s' "$_hr_v" | sed 's/\\/\\\\/g; s/"/\\"/g; s/	/\\t/g' | tr '\n' ' ')\""
        fi
        ;;
    esac
    printf 'BALLAST-RESULT {"%s":%s}\n' "$_hr_key" "$_hr_v"
}

# Whole seconds since boot (the clock every wait here uses).
_hl_now() { cut -d. -f1 /proc/uptime; }

# ballast_alive: ballast's process still runs (a zombie does not count).
ballast_alive() {
    [ -n "${BALLAST_PID:-}" ] && [ -r "/proc/$BALLAST_PID/status" ] &&
        ! grep -q '^State:[[:space:]]*Z' "/proc/$BALLAST_PID/status" 2>/dev/null
}

# wait_console PATTERN [TIMEOUT_S]: waits until a line of the guest console matches
# PATTERN (an extended regular expression, as grep -E; the whole console since boot
# counts, so give each thing to wait for its own words). Returns 1, with a message
# on stderr, after TIMEOUT_S seconds (default 300) or when ballast exits first.
wait_console() {
    _wc_end=$(($(_hl_now) + ${2:-300}))
    while ! grep -Eq -- "$1" "$BALLAST_CONSOLE" 2>/dev/null; do
        if ! ballast_alive; then
            grep -Eq -- "$1" "$BALLAST_CONSOLE" 2>/dev/null && return 0
            echo "wait_console: ballast exited before a line matched '$1'" >&2
            return 1
        fi
        if [ "$(_hl_now)" -ge "$_wc_end" ]; then
            echo "wait_console: no line matched '$1' within ${2:-300} s" >&2
            return 1
        fi
        sleep 0.2
    done
}

# console_line PATTERN: prints the last console line that matches PATTERN (grep -E).
console_line() {
    grep -E -- "$1" "$BALLAST_CONSOLE" 2>/dev/null | tail -n 1
}

# send_guest LINE...: writes one line to ballast's stdin, which the guest reads on its
# console (`read -r line </dev/console`, or from the scenario's stdin). The guest's
# tty echoes it back onto the console.
send_guest() {
    printf '%s\n' "$*" >"$BALLAST_STDIN"
}

# wait_until TIMEOUT_S COMMAND [ARG...]: runs COMMAND every 0.2 s until it succeeds.
# Returns 0 then; after TIMEOUT_S seconds, or once ballast has exited, it tries COMMAND
# once more and returns what that gives. COMMAND runs in this shell, so a function may
# set variables as it goes. For host.sh, where BALLAST_PID is set.
wait_until() {
    wait_every 0.2 "$@"
}

# wait_every STEP_S TIMEOUT_S COMMAND [ARG...]: wait_until, trying every STEP_S seconds.
wait_every() {
    _we_step=$1
    _we_end=$(($(_hl_now) + $2))
    shift 2
    until "$@"; do
        if ! ballast_alive || [ "$(_hl_now)" -ge "$_we_end" ]; then
            "$@"
            return
        fi
        sleep "$_we_step"
    done
}

# now_s: seconds since boot, to the hundredth; since_s T0: seconds since T0, to a tenth.
now_s() { cut -d' ' -f1 /proc/uptime; }
since_s() { awk -v a="$1" -v b="$(now_s)" 'BEGIN { printf "%.1f", b - a }'; }

# json_field KEY: the value of the first "KEY" in the (pretty-printed) JSON on stdin, as
# written but without quotes: a number, true, false, null, or a string without escapes.
# Prints nothing when KEY is absent. Narrow the input with json_object first when a key
# appears in several objects ("state" does in `ballast status --json`).
json_field() {
    sed -n "s/.*\"$1\": *\"\{0,1\}\([^\",}]*\).*/\1/p" | head -n 1
}

# json_object KEY: the lines inside the first object named KEY in the pretty-printed JSON
# on stdin, as in `ballast status --json | json_object memory`: its own members first, then
# those of the objects nested in it, so json_field finds memory's "state" before its
# host_enforce's, and still finds a key only a nested object has (memory's guest file_bytes).
json_object() {
    awk -v key="\"$1\": {" '
        !inside && index($0, key) { inside = 1; match($0, /^ */); indent = RLENGTH; next }
        inside { match($0, /^ */); if (RLENGTH == indent && $0 ~ /^ *}/) exit
                 if (RLENGTH == indent + 2) print; else nested = nested $0 "\n" }
        END { printf "%s", nested }'
}

# status_field OBJECT KEY: KEY of OBJECT (vm, memory or balloon) in `ballast status --json`.
status_field() {
    ballast status --json | json_object "$1" | json_field "$2"
}

# metric NAME: the value of one series of `ballast metrics`, NAME with its labels as
# written there (ballast_memory_reclaim_steps_total{step="file"}); nothing if absent.
metric() {
    ballast metrics | awk -v name="$1" '$1 == name { print $2; exit }'
}

# metric_mib NAME: a byte counter of `ballast metrics` in whole MiB; nothing (and false)
# when the series is absent or the API does not answer.
metric_mib() {
    local bytes
    bytes=$(metric "$1")
    mib_of_bytes "${bytes%.*}"
}

# mib_of_bytes BYTES: whole MiB in BYTES; nothing (and false) when BYTES is no whole number
# (an API that did not answer gives nothing).
mib_of_bytes() {
    case $1 in '' | *[!0-9]*) return 1 ;; esac
    echo $(($1 >> 20))
}

# ballast_resident_mib: guest RAM resident on the host, in MiB, as ballast's API
# measures it; nothing (and false) when the API does not answer.
ballast_resident_mib() {
    mib_of_bytes "$(status_field memory resident_bytes)"
}

# resident_at_most MIB: whether resident guest RAM is at most MIB.
resident_at_most() {
    local mib
    mib=$(ballast_resident_mib) && [ "$mib" -le "$1" ]
}

# Balloon helpers, in MiB as the API has them.
# balloon_actual_mib: what the guest's balloon driver says the balloon holds.
balloon_actual_mib() { status_field balloon actual_mib; }
# balloon_target_mib: the target the host set.
balloon_target_mib() { status_field balloon amount_mib; }
# balloon_holds MIB: whether the balloon holds exactly MIB.
balloon_holds() { [ "$(balloon_actual_mib)" = "$1" ]; }
# balloon_reach MIB [TIMEOUT_S]: sets the balloon's target to MIB and waits (120 s by
# default) until the guest's balloon holds it (it moves in steps of 256 pages).
balloon_reach() {
    ballast balloon set "${1}M" >/dev/null && wait_until "${2:-120}" balloon_holds "$1"
}

# agent_ready: whether ballast's guest agent service has the agent answering.
agent_ready() {
    [ "$(ballast status --json | json_object agent | json_field state)" = ready ]
}

# ballast_rss_kib: ballast's resident memory (VmRSS) in KiB.
ballast_rss_kib() {
    awk '/^VmRSS:/ { print $2 }' "/proc/$BALLAST_PID/status"
}

# gen_bytes SEED SIZE: SIZE pseudo-random bytes (head -c sizes: 4096, 8M, 1G), the
# same for the same SEED everywhere (AES-128-CTR of zeros, keyed by SEED). For disk
# generators on the real host; needs openssl (the harness installs it).
gen_bytes() {
    _gb_key=$(printf '%s' "$1" | sha256sum | cut -c1-32)
    head -c "$2" /dev/zero |
        openssl enc -aes-128-ctr -nosalt -K "$_gb_key" -iv 00000000000000000000000000000000
}
