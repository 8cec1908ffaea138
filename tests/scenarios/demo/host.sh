# Show the reclaim: status before, the limit cut, resident falling, status after.
# resident_shown MIB: prints resident guest RAM; whether it is at most MIB.
resident_shown() {
    r=$(ballast_resident_mib)
    echo "    resident: $r MiB"
    [ "$r" -le "$1" ]
}
wait_console 'BALLAST-SYNC ready' || exit 1
wait_until 30 agent_ready
echo "=== ballast status, before the limit:"
ballast status
echo "=== ballast limit set 160M"
ballast limit set 160M
wait_every 1 60 resident_shown 140
sleep 2
echo "=== ballast status, after:"
ballast status
host_result host_resident_after_mib $(ballast_resident_mib)
# The agent's big-file pass did the file step's work, and no whole-guest fallback ran.
big=$(metric 'ballast_agent_file_freed_bytes_total{pass="big"}')
host_result host_big_pass_freed_mib $(( ${big%.*} >> 20 ))
host_result host_fallbacks "$(metric ballast_agent_file_fallbacks_total)"
send_guest done
