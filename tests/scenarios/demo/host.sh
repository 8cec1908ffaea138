# Show the reclaim: status before, the limit cut, resident falling, status after.
wait_console 'BALLAST-SYNC ready' || exit 1
i=0
while ! ballast status --json | grep -q '"state": "ready"' && [ $i -lt 100 ]; do sleep 0.3; i=$((i + 1)); done
echo "=== ballast status, before the limit:"
ballast status
echo "=== ballast limit set 160M"
ballast limit set 160M
i=0
while [ $i -lt 60 ]; do
    r=$(ballast_resident_mib)
    echo "    resident: $r MiB"
    [ "$r" -le 140 ] && break
    sleep 1
    i=$((i + 1))
done
sleep 2
echo "=== ballast status, after:"
ballast status
host_result host_resident_after_mib $(ballast_resident_mib)
send_guest done
