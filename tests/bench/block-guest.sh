# shellcheck shell=sh
# The guest side of tests/bench/block.sh (run as the guest's /scenario.sh): sequential
# reads of /mnt/big.bin from the benchmark disk, the page cache dropped before each.
#   BLOCK-READ {"rep":N,"bytes":B,"seconds":S,"mib_per_s":R}
reps=$(sed -n 's/.*bench.reps=\([0-9]*\).*/\1/p' /proc/cmdline)
mkdir -p /mnt
mount -t ext4 -o ro /dev/vda /mnt || { echo "BLOCK-ERROR mount failed"; exit 1; }
bytes=$(stat -c %s /mnt/big.bin)
now() { cut -d' ' -f1 /proc/uptime; }
r=1
while [ "$r" -le "${reps:-3}" ]; do
    sync
    echo 3 >/proc/sys/vm/drop_caches
    t0=$(now)
    dd if=/mnt/big.bin of=/dev/null bs=1M 2>/dev/null || echo "BLOCK-ERROR dd failed"
    t1=$(now)
    awk -v r="$r" -v b="$bytes" -v a="$t0" -v z="$t1" 'BEGIN {
        s = z - a; printf "BLOCK-READ {\"rep\":%d,\"bytes\":%d,\"seconds\":%.2f,\"mib_per_s\":%.1f}\n", r, b, s, b / 1048576 / s }'
    r=$((r + 1))
done
