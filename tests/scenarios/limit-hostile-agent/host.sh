# Cut the limit to 192 MiB under a guest that keeps ~300 MiB and an agent that lies: within a
# bounded time the memory state is over_limit and names the agent (agent_unverified), the
# agent's claims are shown beside a measured gain of nothing, and --host-enforce has written
# memory.high = limit + 64 MiB.
cause() { status_field memory state_cause; }
cause_is() { [ "$(cause)" = "$1" ]; }
enforce() { status_field host_enforce "$1"; }
enforce_is() { [ "$(enforce state)" = "$1" ]; }
tf() { if "$@"; then echo true; else echo false; fi; }

wait_console 'BALLAST-SYNC ready' || exit 1
wait_until 60 agent_ready || exit 1
cg=$(enforce cgroup)
host_result host_resident_before_mib "$(ballast_resident_mib)"
t0=$(now_s)
ballast limit set 192M >/dev/null || exit 1
host_result host_enforce_active "$(tf wait_until 60 enforce_is active)"
host_result host_seconds_to_backstop "$(since_s "$t0")"
host_result host_memory_high_bytes "$(cat "$cg/memory.high")"
host_result host_agent_named "$(tf wait_until 120 cause_is agent_unverified)"
host_result host_seconds_to_agent_named "$(since_s "$t0")"
host_result host_memory_state "$(status_field memory state)"
host_result host_state_cause "$(cause)"
host_result host_file_claimed_mib "$(metric_mib 'ballast_memory_reclaim_claimed_bytes_total{step="file"}')"
host_result host_file_obtained_mib "$(metric_mib 'ballast_memory_reclaim_obtained_bytes_total{step="file"}')"
host_result host_resident_after_mib "$(ballast_resident_mib)"
ballast status | sed -n 's/^\(state\|memory\|host enforce\): */\1: /p' | while read -r line; do echo "status: $line"; done
ballast limit clear >/dev/null || exit 1
send_guest done
