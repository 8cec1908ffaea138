# With most of the guest in the balloon, allocate more than is free: the kernel's OOM path
# takes pages back from the balloon (deflate on OOM) instead of killing, and the guest goes on.
sync_host ready  # the host inflated the balloon to 160 MiB
free0=$(meminfo_kib MemAvailable)
result available_before_kib "$free0"
mkdir -p /fill && mount -t tmpfs -o size=100% tmpfs /fill
want=$(( free0 / 1024 + 64 ))
dd if=/dev/zero of=/fill/f bs=1M count="$want" 2>/dev/null
got=$(( $(stat -c %s /fill/f) / 1048576 ))
result allocated_mib "$got"
result allocated_beyond_free_mib $(( got - free0 / 1024 ))
rm /fill/f
sync_host allocated  # the host measured the balloon
result guest_survived true
