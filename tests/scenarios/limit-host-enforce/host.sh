# ballast starts in its own cgroup v2 with memory.high max (standby). A limit cut the guest
# cannot meet (no agent, no balloon driver) leaves it guest_unresponsive, and ballast sets
# memory.high to the limit + 64 MiB (active); clearing the limit writes max again (standby);
# at exit ballast leaves the cgroup and removes it.
# enforce KEY: KEY of --host-enforce's status (`ballast status --json`).
enforce() { status_field host_enforce "$1"; }
enforce_is() { [ "$(enforce state)" = "$1" ]; }
ballast_exited() { ! ballast_alive; }
tf() { if "$@"; then echo true; else echo false; fi; }

wait_console 'BALLAST-SYNC ready' || exit 1
cg=$(enforce cgroup)
host_result host_enforce_at_start "$(enforce state)"
host_result host_cgroup_is_ballast_pid "$(tf [ "$cg" = "/sys/fs/cgroup/ballast-$BALLAST_PID" ])"
host_result host_in_cgroup "$(tf grep -qx "0::/ballast-$BALLAST_PID" "/proc/$BALLAST_PID/cgroup")"
host_result host_memory_high_at_start "$(cat "$cg/memory.high")"
host_result host_memory_current_mib_at_start $(( $(cat "$cg/memory.current") >> 20 ))

ballast limit set 96M >/dev/null || exit 1
host_result host_enforce_active "$(tf wait_until 60 enforce_is active)"
host_result host_memory_state "$(status_field memory state)"
host_result host_memory_high_bytes "$(cat "$cg/memory.high")"
host_result host_api_memory_high_bytes "$(enforce memory_high_bytes)"
host_result host_memory_current_mib $(( $(cat "$cg/memory.current") >> 20 ))
host_result host_memory_high_events "$(awk '$1 == "high" { print $2 }' "$cg/memory.events")"
ballast status | sed -n 's/^host enforce: *//p' | while read -r line; do echo "status: $line"; done

ballast limit clear >/dev/null || exit 1
host_result host_enforce_after_clear "$(wait_until 60 enforce_is standby && echo standby || enforce state)"
host_result host_memory_high_after_clear "$(cat "$cg/memory.high")"

send_guest done
wait_until 50 ballast_exited
host_result host_cgroup_removed "$(tf [ ! -d "$cg" ])"
