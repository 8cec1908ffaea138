# A process fills nearly all free memory with a pattern and exits, leaving it in free pages;
# the host inflates the balloon over them, counts the pattern in guest RAM, and deflates.
# Then the guest takes the memory back and must read zeros, never the pattern.
pat=BALLAST-SCRUB:0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLM
fill_mib=$(($(meminfo_kib MemAvailable) / 1024 - 32))
# 1 MiB of 64-byte lines, copied fill_mib times (each copy its own malloc'd mmap).
awk -v mib="$fill_mib" -v pat="$pat" 'BEGIN {
    s = pat "\n"
    while (length(s) < 1048576) s = s s
    for (i = 0; i < mib; i++) a[i] = s
}'
result filled_mib "$fill_mib"
result memfree_filled_kib "$(meminfo_kib MemFree)"
sync_host filled "free=$(($(meminfo_kib MemFree) / 1024))"  # the host inflated the balloon and counted the pattern
result memfree_inflated_kib "$(meminfo_kib MemFree)"
sync_host measured  # the host deflated it and counted again
# Take most of the free memory back (tmpfs pages) and read it: all zeros. (The kernel zeroes
# pages for user space anyway; the host's scans of guest RAM are what tell a scrub.)
avail=$(($(meminfo_kib MemAvailable) / 1024 - 32))
mkdir -p /back && mount -t tmpfs -o size=90% tmpfs /back
fallocate -l "${avail}M" /back/f
result readback_mib $(($(stat -c %s /back/f) / 1048576))
if head -c "$(stat -c %s /back/f)" /dev/zero | cmp -s /back/f -; then
    result readback_zero true
else
    result readback_zero false
fi
rm /back/f
