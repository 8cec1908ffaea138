# Traffic both ways while the limit is cut from none to 192 MiB: resident must fall to the
# limit and stay there while the bytes keep moving, and both streams arrive intact. The
# streams run until the limit has held for 10 s (this script stops its own and tells the
# guest to stop its), so the test does not hang on the throughput of the environment.
guest=192.168.219.2
tap=bt-net1
# The device's byte counters; nothing (and false) when the API does not answer, never a shell
# arithmetic error (which would end this script).
net_bytes() {
    _nb=$(metric "ballast_net_$1_bytes_total{tap=\"$tap\"}")
    _nb=${_nb%.*}
    case $_nb in '' | *[!0-9]*) return 1 ;; esac
    echo "$_nb"
}
net_mib() {
    _rx=$(net_bytes rx) && _tx=$(net_bytes tx) && mib_of_bytes $((_rx + _tx))
}
# Both ways under way: the guest has sent and received a few MiB.
moving() {
    _tx=$(net_bytes tx) && _rx=$(net_bytes rx) &&
        [ $((_tx >> 20)) -ge 4 ] && [ $((_rx >> 20)) -ge 4 ]
}
reclaimed() {
    resident_at_most 168 && { to_threshold=$(since_s "$t0"); at_threshold=$(net_mib); }
}
wait_console 'BALLAST-SYNC ready' || exit 1
wait_until 60 agent_ready
rm -f /tmp/net-limit-hold /tmp/net-limit-h2g.fifo /tmp/net-limit-g2h.sum /tmp/net-limit-h2g.sum
mkfifo /tmp/net-limit-hold /tmp/net-limit-h2g.fifo
nc -l -p 5001 <>/tmp/net-limit-hold | sha256sum >/tmp/net-limit-g2h.sum &
sha256sum </tmp/net-limit-h2g.fifo >/tmp/net-limit-h2g.sum &
(
    {
        dd if=/dev/urandom bs=64k 2>/dev/null &
        echo $! >/tmp/net-limit-dd.pid
        wait
    } | tee /tmp/net-limit-h2g.fifo | nc "$guest" 5002
) &
sleep 1
send_guest go
wait_console 'BALLAST-SYNC sending' || exit 1
# Once bytes are flowing both ways, the limit is cut.
wait_every 0.5 120 moving || exit 1
host_result host_resident_before_mib "$(ballast_resident_mib)"
host_result host_net_mib_at_cut "$(net_mib)"
t0=$(now_s)
ballast limit set 192M >/dev/null || exit 1
to_threshold=null at_threshold=''
wait_every 0.5 300 reclaimed
host_result host_seconds_to_threshold "$to_threshold"
# Settled: under the limit for the next 10 s, with the traffic going on.
max=0 i=0
while [ $i -lt 20 ]; do
    ballast_alive || exit 1
    r=$(ballast_resident_mib)
    [ "$r" -gt "$max" ] && max=$r
    sleep 0.5
    i=$((i + 1))
done
host_result host_settled_max_resident_mib "$max"
now_mib=$(net_mib) || now_mib=''
host_result host_net_mib_while_limited "$([ -n "$now_mib" ] && [ -n "$at_threshold" ] && echo $((now_mib - at_threshold)) || echo null)"
host_result host_state "$(status_field memory state)"
# Both streams end: this side's now, the guest's when it reads the line. The guest reports
# once both its streams have ended; this side's checksums are then written, or about to be
# (bounded waits on the files, not a bare `wait`, which never returned in a nested run).
kill "$(cat /tmp/net-limit-dd.pid)"
send_guest stop
wait_console 'BALLAST-SYNC sums' 300 || exit 1
sums=$(console_line 'BALLAST-SYNC sums')
sent=$(echo "$sums" | awk '{ print $3 }') received=$(echo "$sums" | awk '{ print $4 }')
summed() { [ -s /tmp/net-limit-g2h.sum ] && [ -s /tmp/net-limit-h2g.sum ]; }
wait_until 60 summed || { echo "a checksum of this side's streams never came; processes:"; ps; exit 1; }
got=$(cut -d' ' -f1 /tmp/net-limit-g2h.sum) ours=$(cut -d' ' -f1 /tmp/net-limit-h2g.sum)
host_result host_guest_to_host_matches "$([ -n "$got" ] && [ "$got" = "$sent" ] && echo true || echo false)"
host_result host_host_to_guest_matches "$([ -n "$ours" ] && [ "$ours" = "$received" ] && echo true || echo false)"
host_result host_net_mib "$(net_mib)"
host_result host_final_resident_mib "$(ballast_resident_mib)"
send_guest done
