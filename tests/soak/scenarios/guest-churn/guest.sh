# Memory and disk churn with no help from the host, so that any VMM can run it (the
# soak's control runs it under QEMU microvm as well as under ballast): three rounds of
# reading 192 MiB of files into the page cache, dirtying a 64 MiB anon buffer for a few
# seconds, and dropping the cache again.
grep -q ' /mnt ext4 ro' /proc/mounts || { result mounted false; exit 1; }
round=0
while [ $round -lt 3 ]; do
    cat /mnt/*.bin >/dev/null
    dd if=/dev/zero of=/dev/null bs=64M count=40 2>/dev/null
    echo 3 >/proc/sys/vm/drop_caches
    round=$((round + 1))
done
result churn_rounds "$round"
