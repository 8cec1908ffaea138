# Cut the limit to 192 MiB: resident must fall to 192 MiB and settle at or under 168 MiB
# (12.5 % under), the file step before the balloon step. Then raise it: the balloon deflates.
file_steps() { metric 'ballast_memory_reclaim_steps_total{step="file"}'; }
inflate_steps() { metric 'ballast_memory_reclaim_steps_total{step="inflate"}'; }
# reclaimed: notes when resident first fell to the limit, and the file steps taken when the
# balloon first inflated; whether resident reached the threshold.
reclaimed() {
    r=$(ballast_resident_mib)
    [ "$to_limit" = null ] && [ "$r" -le 192 ] && to_limit=$(since_s "$t0")
    [ -z "$file_at_inflate" ] && [ "$(inflate_steps)" -gt 0 ] && file_at_inflate=$(file_steps)
    [ "$r" -le 168 ] && to_threshold=$(since_s "$t0")
}
deflated() { [ "$(balloon_target_mib)" -lt "$before" ]; }
wait_console 'BALLAST-SYNC ready' || exit 1
wait_until 30 agent_ready
host_result host_resident_before_mib "$(ballast_resident_mib)"
t0=$(now_s)
ballast limit set 192M >/dev/null || exit 1
to_limit=null to_threshold=null file_at_inflate=''
wait_every 0.5 300 reclaimed
ballast_alive || exit 1
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
host_result host_state "$(status_field memory state)"
host_result host_balloon_target_mib "$(balloon_target_mib)"
# The order of the steps, from the memory manager's counters: the file step was taken by the
# time the balloon first inflated (the policy asks for both in that order within one round).
files=$(file_steps)
host_result host_file_step_seen "$([ "${files:-0}" -gt 0 ] && echo true || echo false)"
host_result host_file_before_balloon "$([ "${file_at_inflate:-$files}" -gt 0 ] 2>/dev/null && echo true || echo false)"
# The agent's big-file pass did the file step's work, and no whole-guest fallback ran.
big=$(metric 'ballast_agent_file_freed_bytes_total{pass="big"}')
host_result host_big_pass_freed_mib $(( ${big%.*} >> 20 ))
host_result host_fallbacks "$(metric ballast_agent_file_fallbacks_total)"
send_guest measured
wait_console 'BALLAST-SYNC measured' || exit 1
before=$(balloon_target_mib)
ballast limit set 512M >/dev/null || exit 1
[ "${before:-0}" -gt 0 ] && wait_every 0.5 60 deflated
after=$(balloon_target_mib)
host_result host_deflated_mib $(( ${before:-0} - ${after:-0} ))
send_guest done
