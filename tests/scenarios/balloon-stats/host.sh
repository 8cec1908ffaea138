stat_of() { ballast balloon stats --json | sed -n "s/.*\"$1\": *\\([0-9]*\\).*/\\1/p"; }
# fresh KEY OLD: waits (up to 20 s, two polling intervals and more) for KEY to differ from OLD.
fresh() {
    i=0
    v=$(stat_of "$1")
    while [ "$v" = "$2" ] && [ $i -lt 40 ]; do sleep 0.5; v=$(stat_of "$1"); i=$((i + 1)); done
    echo "$v"
}
wait_console 'BALLAST-SYNC ready' || exit 1
total0=$(fresh total_memory "")
free0=$(stat_of free_memory)
host_result host_stats_present "$([ -n "$total0" ] && echo true || echo false)"
ballast balloon set 32M >/dev/null
i=0
while [ "$(ballast balloon set 32M --json | sed -n 's/.*"actual_mib": *\([0-9]*\).*/\1/p')" != 32 ] && [ $i -lt 300 ]; do
    sleep 0.2
    i=$((i + 1))
done
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
