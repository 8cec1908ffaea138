# The balloon's statistics follow the guest: an inflate lowers total memory, an allocation
# lowers free memory.
sync_host ready  # the host read the statistics and inflated 32 MiB
read -r line            # the host read them again
mkdir -p /fill && mount -t tmpfs -o size=90% tmpfs /fill
dd if=/dev/zero of=/fill/f bs=1M count=64 2>/dev/null
sync_host allocated  # the host read them once more
rm /fill/f
