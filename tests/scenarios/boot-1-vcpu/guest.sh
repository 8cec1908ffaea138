# What the guest sees of the vCPUs and memory ballast gave it.
result nproc "$(nproc)"
result memtotal_kib "$(meminfo_kib MemTotal)"
