# 256 MiB of page cache, then random bytes both ways over TCP at once, for as long as the host
# takes to cut the limit to 192 MiB and see it hold (the host says when to stop, so the amount
# follows the time the limit takes, whatever the throughput): both streams must arrive intact.
host=192.168.219.1
grep -q ' /mnt ext4 ro' /proc/mounts || { result mounted false; exit 1; }
cat /mnt/*.bin >/dev/null
result cached_kib "$(meminfo_kib Cached)"
mkfifo /tmp/hold /tmp/out.fifo
# The host's bytes come in on port 5002 (a listener whose stdin never ends, so it keeps its
# side open until the data is in).
nc -l -p 5002 <>/tmp/hold | sha256sum >/tmp/in.sum &
sync_host ready # the host listens on 5001, starts sending, and answers
sha256sum </tmp/out.fifo >/tmp/out.sum &
# dd's PID is kept so that stopping it ends the stream (nc then closes its sending side).
{
    dd if=/dev/urandom bs=64k 2>/dev/null &
    echo $! >/tmp/dd.pid
    wait
} | tee /tmp/out.fifo | nc "$host" 5001 &
sync_host sending # the host cuts the limit, watches it hold, stops its own stream, answers
kill "$(cat /tmp/dd.pid)"
wait # for both streams and their checksums
result cached_after_kib "$(meminfo_kib Cached)"
# Both checksums go to the host, which compares them with its own (a 64-character line sent
# the other way, to the guest's console, never arrived in two nested runs); its short answer
# says it has read the VM's counters, so the guest may end.
sync_host sums "$(cut -d' ' -f1 /tmp/out.sum)" "$(cut -d' ' -f1 /tmp/in.sum)"
