stat_of() { ballast balloon stats --json | json_field "$1"; }
stat_differs() { [ "$(stat_of "$1")" != "$2" ]; }
# fresh KEY OLD: KEY once it differs from OLD (up to 20 s, two polling intervals and more).
fresh() {
    wait_every 0.5 20 stat_differs "$1" "$2"
    stat_of "$1"
}
wait_console 'BALLAST-SYNC ready' || exit 1
total0=$(fresh total_memory "")
free0=$(stat_of free_memory)
host_result host_stats_present "$([ -n "$total0" ] && echo true || echo false)"
balloon_reach 32 60
send_guest inflated
# The guest sends statistics every second: two intervals after the inflate ended, they show it.
sleep 2.5
total1=$(fresh total_memory "$total0")
host_result host_total_drop_kib $(( (total0 - total1) / 1024 ))
send_guest read
wait_console 'BALLAST-SYNC allocated' || exit 1
free1=$(fresh free_memory "$(stat_of free_memory)")
host_result host_free_drop_kib $(( (free0 - free1) / 1024 ))
send_guest done
