balloon_json() { ballast balloon set "$1" --json; }
field() { sed -n "s/.*\"$1\": *\\([0-9]*\\).*/\\1/p"; }
wait_console 'BALLAST-SYNC ready' || exit 1
ballast balloon set 160M >/dev/null
i=0
while [ "$(balloon_json 160 | field actual_mib)" != 160 ] && [ $i -lt 600 ]; do sleep 0.2; i=$((i + 1)); done
before=$(balloon_json 160 | field actual_mib)
host_result host_actual_before_mib "$before"
send_guest inflated
wait_console 'BALLAST-SYNC allocated' 300 || exit 1
after=$(ballast status --json | field actual_mib)
host_result host_actual_after_mib "$after"
host_result host_actual_fell_mib $((before - after))
# The target stays where the host put it: the guest took pages back, the host did not give them.
host_result host_target_mib "$(ballast status --json | field amount_mib)"
send_guest measured
