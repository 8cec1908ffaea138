# shellcheck shell=sh
# The guest side of tests/bench/net.sh (run as the guest's /scenario.sh): TCP throughput
# between the guest (eth0, 192.168.218.2, set up from its command line) and the host end of
# its TAP (192.168.218.1), where net-loop.sh keeps two servers: port 5001 swallows what it is
# sent, port 5002 sends MIB MiB of zeros to whoever connects. Each transfer is one busybox
# nc connection, timed here from connect to the last byte; the guest starts both, so no
# other synchronisation is needed. One line per transfer:
#   NET-XFER {"dir":"g2h"|"h2g","rep":N,"bytes":B,"seconds":S,"mib_per_s":R}
host=192.168.218.1
reps=$(sed -n 's/.*bench.reps=\([0-9]*\).*/\1/p' /proc/cmdline)
mib=$(sed -n 's/.*bench.mib=\([0-9]*\).*/\1/p' /proc/cmdline)
reps=${reps:-3} mib=${mib:-256}
now() { cut -d' ' -f1 /proc/uptime; }
report() { # DIR REP BYTES T0 T1
    awk -v d="$1" -v r="$2" -v b="$3" -v a="$4" -v z="$5" 'BEGIN { s = z - a
        printf "NET-XFER {\"dir\":\"%s\",\"rep\":%d,\"bytes\":%d,\"seconds\":%.2f,\"mib_per_s\":%.1f}\n", d, r, b, s, b / 1048576 / s }'
}
# The servers come up a moment after the host's loop starts this VM.
for _ in $(seq 100); do
    ping -c 1 -W 1 "$host" >/dev/null 2>&1 && break
done
mkfifo /tmp/hold
r=1
while [ "$r" -le "$reps" ]; do
    t0=$(now)
    dd if=/dev/zero bs=64k count=$((mib * 16)) 2>/dev/null | nc "$host" 5001 || echo "NET-ERROR g2h nc failed"
    t1=$(now)
    report g2h "$r" $((mib << 20)) "$t0" "$t1"
    t0=$(now)
    # stdin that never ends (the FIFO opened both ways): nc waits for the host's last byte.
    bytes=$(nc "$host" 5002 <>/tmp/hold | wc -c)
    t1=$(now)
    [ "$bytes" = $((mib << 20)) ] || echo "NET-ERROR h2g got $bytes bytes"
    report h2g "$r" "$bytes" "$t0" "$t1"
    r=$((r + 1))
done
