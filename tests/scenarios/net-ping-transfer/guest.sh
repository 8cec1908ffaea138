# The guest's eth0 (virtio_net from the Debian kernel's modules) came up from the command line
# with 192.168.217.2/24; the host's end is the TAP bt-net0, 192.168.217.1. Pings both ways,
# then 32 MiB of random bytes each way over TCP (busybox nc), checksums compared. (256 MiB
# each way did not finish its first direction in 9 minutes in nested mode, where the random
# bytes, the checksums and the network share one emulated CPU; tests/bench/net.sh measures
# throughput.)
host=192.168.217.1
mib=32
result guest_mac "$(cat /sys/class/net/eth0/address)"
result guest_driver "$(basename "$(readlink /sys/class/net/eth0/device/driver)")"
if ping -c 3 -W 5 "$host" >/dev/null; then result guest_ping true; else result guest_ping false; fi
sync_host pinged # the host pings back, then listens on port 5001

# Guest to host: what goes into nc is checksummed on the way.
mkfifo /tmp/out.fifo
sha256sum </tmp/out.fifo >/tmp/out.sum &
t0=$(now_s)
dd if=/dev/urandom bs=64k count=$((mib * 16)) 2>/dev/null | tee /tmp/out.fifo | nc "$host" 5001
t1=$(now_s)
wait
result guest_send_seconds "$(seconds_between "$t0" "$t1")"
sync_host sent "$(cut -d' ' -f1 /tmp/out.sum)" # the host compares

# Host to guest: a listener whose stdin never ends (a FIFO opened both ways), so it does not
# close its side before the data is in.
mkfifo /tmp/hold
nc -l -p 5002 <>/tmp/hold | sha256sum >/tmp/in.sum &
sleep 1
sync_host listening # the host answers, then sends 32 MiB
wait
# The host compares (a 64-character line sent the other way, to the guest's console, never
# arrived in two nested runs), reads the VM's counters, and says when the guest may end.
sync_host received "$(cut -d' ' -f1 /tmp/in.sum)"
