# The balloon's statistics follow the guest: an inflate lowers total memory, an allocation
# lowers free memory.
echo "BALLAST-SYNC ready"
read -r line            # the host read the statistics and inflated 32 MiB
read -r line            # the host read them again
mkdir -p /fill && mount -t tmpfs -o size=90% tmpfs /fill
dd if=/dev/zero of=/fill/f bs=1M count=64 2>/dev/null
echo "BALLAST-SYNC allocated"
read -r line            # the host read them once more
rm /fill/f
