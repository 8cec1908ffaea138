# The soak's control workload, the same under ballast and under QEMU microvm: four rounds of
# re-reading 256 MiB of files while a process keeps a 48 MiB anon buffer busy; between rounds
# the host inflates the balloon to 320 MiB and empties it again (host.sh).
grep -q ' /mnt ext4 ro' /proc/mounts || { result mounted false; exit 1; }
dd if=/dev/zero of=/dev/null bs=48M count=2000000000 2>/dev/null &
busy=$!
c=1
while [ $c -le 4 ]; do
    cat /mnt/*.bin >/dev/null
    sync_host cycle$c
    kill -0 "$busy" 2>/dev/null || { result busy_died_in_cycle "$c"; exit 1; }
    c=$((c + 1))
done
result guest_cycles 4
kill "$busy"
