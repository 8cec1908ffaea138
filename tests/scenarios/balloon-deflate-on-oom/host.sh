wait_console 'BALLAST-SYNC ready' || exit 1
balloon_reach 160 120
before=$(balloon_actual_mib)
host_result host_actual_before_mib "$before"
send_guest inflated
wait_console 'BALLAST-SYNC allocated' 300 || exit 1
after=$(balloon_actual_mib)
host_result host_actual_after_mib "$after"
host_result host_actual_fell_mib $((before - after))
# The target stays where the host put it: the guest took pages back, the host did not give them.
host_result host_target_mib "$(balloon_target_mib)"
send_guest measured
