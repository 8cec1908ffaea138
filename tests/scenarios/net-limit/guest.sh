# 256 MiB of page cache, then 512 MiB of random bytes each way over TCP at once while the host
# cuts the limit to 192 MiB: the transfers must complete with matching checksums.
host=192.168.219.1
grep -q ' /mnt ext4 ro' /proc/mounts || { result mounted false; exit 1; }
cat /mnt/*.bin >/dev/null
result cached_kib "$(meminfo_kib Cached)"
mkfifo /tmp/hold /tmp/out.fifo
# The host's bytes come in on port 5002 (a listener whose stdin never ends, so it keeps its
# side open until the data is in).
nc -l -p 5002 <>/tmp/hold | sha256sum >/tmp/in.sum &
sync_host ready # the host listens on 5001, starts sending, answers, and cuts the limit
sha256sum </tmp/out.fifo >/tmp/out.sum &
dd if=/dev/urandom bs=64k count=8192 2>/dev/null | tee /tmp/out.fifo | nc "$host" 5001
wait # for what comes in, and the checksums
result cached_after_kib "$(meminfo_kib Cached)"
sync_host sent "$(cut -d' ' -f1 /tmp/out.sum)" # the host answers with the checksum it sent
if [ "$(cut -d' ' -f1 /tmp/in.sum)" = "$host_line" ]; then
    result guest_received_matches true
else
    result guest_received_matches false
fi
