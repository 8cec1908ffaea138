# Fill 128 MiB, let the host measure, free it: free page reporting hands the freed pages to the
# host without any inflate.
mkdir -p /fill && mount -t tmpfs -o size=90% tmpfs /fill
dd if=/dev/zero of=/fill/f bs=1M count=128 2>/dev/null
sync_host filled
rm /fill/f
sync_host freed
