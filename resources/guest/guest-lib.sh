# shellcheck shell=sh
# Helpers for a scenario's guest.sh, which the guest init runs with this file sourced
# (busybox sh, so POSIX sh only). Results go through `result KEY VALUE` (/bin/result, from
# resources/guest/result); these are the other things scenarios kept writing again.

# meminfo_kib KEY: a /proc/meminfo field in KiB, KEY without its colon (MemFree, Cached).
meminfo_kib() { awk -v k="$1:" '$1 == k { print $2 }' /proc/meminfo; }

# sync_host NAME [WORDS...]: tells host.sh that the scenario reached NAME (the console line
# "BALLAST-SYNC NAME WORDS...", which host.sh's wait_console waits for), then waits for the
# host's answer (a line host.sh sends with send_guest) and leaves it in $host_line.
sync_host() {
    echo "BALLAST-SYNC $*"
    read -r host_line
}

# wait_for TIMEOUT_S COMMAND [ARG...]: runs COMMAND every 0.1 s until it succeeds (0), or
# tries it once more after TIMEOUT_S seconds and returns what that gives.
wait_for() {
    _wf_end=$(($(cut -d. -f1 /proc/uptime) + $1))
    shift
    until "$@"; do
        [ "$(cut -d. -f1 /proc/uptime)" -ge "$_wf_end" ] && { "$@"; return; }
        sleep 0.1
    done
}

# disk_reads DEV: reads completed on the block device DEV (vda) since boot.
disk_reads() { awk '{ print $1 }' "/sys/block/$1/stat"; }

# now_s: seconds since boot, to the hundredth; seconds_between A B: B - A, to the hundredth.
now_s() { cut -d' ' -f1 /proc/uptime; }
seconds_between() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

# busy_anon MIB: starts a process that keeps MIB of anon memory busy (dd re-reads /dev/zero
# into one MIB buffer over and over), leaves its pid in $busy, and waits (60 s at most) for all
# of it to be resident; busy_rss_kib then says how much is.
busy_anon() {
    dd if=/dev/zero of=/dev/null bs="$1"M count=2000000000 2>/dev/null &
    busy=$!
    _ba_kib=$(($1 * 1024))
    wait_for 60 _busy_anon_full
}
busy_rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$busy/status"; }
_busy_anon_full() { [ "$(busy_rss_kib)" -ge "$_ba_kib" ]; }
