# Touch nearly all free memory and free it again, so every free guest page is resident on the
# host; then let the host inflate the balloon by 64 MiB and deflate it.
mkdir -p /fill && mount -t tmpfs -o size=90% tmpfs /fill
fill_mib=$(( $(meminfo_kib MemAvailable) / 1024 - 32 ))
dd if=/dev/zero of=/fill/f bs=1M count="$fill_mib" 2>/dev/null
rm /fill/f
result filled_mib "$fill_mib"
total0=$(meminfo_kib MemTotal)
sync_host filled  # the host inflated the balloon
total1=$(meminfo_kib MemTotal)
result memtotal_drop_kib $((total0 - total1))
sync_host measured  # the host deflated it
total2=$(meminfo_kib MemTotal)
result memtotal_back_kib $((total2 - total1))
