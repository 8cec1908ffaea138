# ballast starts in its own cgroup v2 with memory.high max (standby). A limit cut the guest
# cannot meet (no agent, no balloon driver) leaves it guest_unresponsive, and ballast sets
# memory.high to the limit + 64 MiB (active); clearing the limit writes max again (standby);
# at exit ballast leaves the cgroup and removes it.
enforce() { ballast status --json | sed -n '/"host_enforce": {/,/}/p'; }
# field NAME: a field's value (without quotes) from the JSON lines on stdin.
field() { sed -n "s/^ *\"$1\": *\"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}\$/\1/p" | head -n 1; }
# wait_enforce STATE: until --host-enforce's state is STATE (60 s at most).
wait_enforce() {
    i=0
    while [ "$(enforce | field state)" != "$1" ] && [ $i -lt 300 ]; do
        ballast_alive || return 1
        sleep 0.2
        i=$((i + 1))
    done
    [ "$(enforce | field state)" = "$1" ]
}
tf() { if "$@"; then echo true; else echo false; fi; }

wait_console 'BALLAST-SYNC ready' || exit 1
cg=$(enforce | field cgroup)
host_result host_enforce_at_start "$(enforce | field state)"
host_result host_cgroup_is_ballast_pid "$(tf [ "$cg" = "/sys/fs/cgroup/ballast-$BALLAST_PID" ])"
host_result host_in_cgroup "$(tf grep -qx "0::/ballast-$BALLAST_PID" "/proc/$BALLAST_PID/cgroup")"
host_result host_memory_high_at_start "$(cat "$cg/memory.high")"
host_result host_memory_current_mib_at_start $(( $(cat "$cg/memory.current") >> 20 ))

ballast limit set 96M >/dev/null || exit 1
host_result host_enforce_active "$(tf wait_enforce active)"
host_result host_memory_state "$(ballast status | sed -n 's/^memory state: *\([a-z_]*\).*/\1/p')"
host_result host_memory_high_bytes "$(cat "$cg/memory.high")"
host_result host_api_memory_high_bytes "$(enforce | field memory_high_bytes)"
host_result host_memory_current_mib $(( $(cat "$cg/memory.current") >> 20 ))
host_result host_memory_high_events "$(awk '$1 == "high" { print $2 }' "$cg/memory.events")"
ballast status | sed -n 's/^host enforce: *//p' | while read -r line; do echo "status: $line"; done

ballast limit clear >/dev/null || exit 1
host_result host_enforce_after_clear "$(wait_enforce standby && echo standby || enforce | field state)"
host_result host_memory_high_after_clear "$(cat "$cg/memory.high")"

send_guest done
i=0
while ballast_alive && [ $i -lt 250 ]; do sleep 0.2; i=$((i + 1)); done
host_result host_cgroup_removed "$(tf [ ! -d "$cg" ])"
