# Cut the limit to 192 MiB: resident must fall to 192 MiB and settle at or under 168 MiB
# (12.5 % under), the file step before the balloon step. Then raise it: the balloon deflates.
now() { cut -d' ' -f1 /proc/uptime; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
wait_console 'BALLAST-SYNC ready' || exit 1
i=0
while ! ballast status --json | grep -q '"state": "ready"' && [ $i -lt 100 ]; do sleep 0.3; i=$((i + 1)); done
host_result host_resident_before_mib "$(ballast_resident_mib)"
t0=$(now)
ballast limit set 192M >/dev/null || exit 1
to_limit=null to_threshold=null
i=0
while [ $i -lt 600 ]; do
    ballast_alive || exit 1
    r=$(ballast_resident_mib)
    [ "$to_limit" = null ] && [ "$r" -le 192 ] && to_limit=$(since "$t0")
    [ "$r" -le 168 ] && { to_threshold=$(since "$t0"); break; }
    sleep 0.5
    i=$((i + 1))
done
host_result host_seconds_to_limit "$to_limit"
host_result host_seconds_to_threshold "$to_threshold"
# Settled: it stays under the limit for the next 10 s.
max=0
i=0
while [ $i -lt 20 ]; do
    ballast_alive || exit 1
    r=$(ballast_resident_mib)
    [ "$r" -gt "$max" ] && max=$r
    sleep 0.5
    i=$((i + 1))
done
host_result host_settled_max_resident_mib "$max"
status=$(ballast status --json)
host_result host_state "$(echo "$status" | sed -n 's/.*"state": "\([a-z_]*\)".*/\1/p' | sed -n 2p)"
host_result host_balloon_target_mib "$(echo "$status" | json_num amount_mib)"
# The order of the steps, from ballast's log on the console.
file_line=$(grep -n 'memory manager: DeactivateFile' "$BALLAST_CONSOLE" | head -n 1 | cut -d: -f1)
balloon_line=$(grep -n 'memory manager: SetBalloon' "$BALLAST_CONSOLE" | head -n 1 | cut -d: -f1)
host_result host_file_step_seen "$([ -n "$file_line" ] && echo true || echo false)"
host_result host_file_before_balloon "$([ -n "$file_line" ] && { [ -z "$balloon_line" ] || [ "$file_line" -lt "$balloon_line" ]; } && echo true || echo false)"
send_guest measured
wait_console 'BALLAST-SYNC measured' || exit 1
before=$(ballast status --json | json_num amount_mib)
ballast limit set 512M >/dev/null || exit 1
i=0
while [ "$(ballast status --json | json_num amount_mib)" -ge "${before:-0}" ] && [ "${before:-0}" -gt 0 ] && [ $i -lt 120 ]; do
    sleep 0.5
    i=$((i + 1))
done
after=$(ballast status --json | json_num amount_mib)
host_result host_deflated_mib $(( ${before:-0} - ${after:-0} ))
send_guest done
