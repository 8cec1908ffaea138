# Cut the limit to 192 MiB: resident must settle under it with the hot file still cached
# (the guest measures its disk reads), the big-file pass doing the work and no whole-guest
# fallback. Then cut it to 96 MiB, below the hot file and what the guest needs beside it:
# over_limit, with a cause that names the guest's need (working_set; starved if the squeeze
# starved it first), not only the time spent over the limit (sustained).
named() { case $(status_field memory state_cause) in working_set | starved) true ;; *) false ;; esac; }
mib_of() { v=$(metric "$1"); echo $(( ${v%.*} >> 20 )); }

wait_console 'BALLAST-SYNC ready' || exit 1
wait_until 30 agent_ready
host_result host_resident_before_mib "$(ballast_resident_mib)"
t0=$(now_s)
ballast limit set 192M >/dev/null || exit 1
host_result host_settled "$(wait_every 0.5 120 resident_at_most 168 && echo true || echo false)"
host_result host_seconds_to_threshold "$(since_s "$t0")"
sleep 5
host_result host_resident_settled_mib "$(ballast_resident_mib)"
host_result host_big_pass_freed_mib "$(mib_of 'ballast_agent_file_freed_bytes_total{pass="big"}')"
host_result host_fallbacks "$(metric ballast_agent_file_fallbacks_total)"
host_result host_working_set_guest_mib $(( $(status_field memory working_set_guest_active_bytes) >> 20 ))
send_guest measure
wait_console 'BALLAST-SYNC measured' || exit 1
ballast limit set 96M >/dev/null || exit 1
host_result host_below_hot_named "$(wait_until 120 named && echo true || echo false)"
host_result host_below_hot_cause "$(status_field memory state_cause)"
host_result host_below_hot_state "$(status_field memory state)"
ballast status | sed -n 's/^\(memory\|state\): */\1: /p' | while read -r line; do echo "status: $line"; done
ballast limit clear >/dev/null || exit 1
send_guest done
