# Four rounds: re-read 256 MiB of files (page cache), then let the host cut and clear the
# limit, while a process keeps a 48 MiB anon buffer busy the whole time. The soak's control
# (tests/soak/scenarios/balloon-cycles) runs this same script, its host inflating and emptying
# the balloon instead, under ballast and under QEMU microvm alike.
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
