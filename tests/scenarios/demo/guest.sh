# A tour of the guest, then memory to take back: 192 MiB of page cache from its disk and a
# process that keeps a 32 MiB buffer busy.
echo "=== guest: $(uname -sr), $(nproc) vCPUs, $(meminfo_kib MemTotal) KiB"
echo "=== virtio devices (virtio-mmio, found through ACPI):"
for d in /sys/bus/virtio/devices/*; do
    drv=$(readlink "$d/driver" 2>/dev/null || true)
    echo "    ${d##*/}: device id $(cat "$d/device"), driver ${drv##*/}"
done
result nproc "$(nproc)"
result memtotal_kib "$(meminfo_kib MemTotal)"
result virtio_devices "$(find /sys/bus/virtio/devices -mindepth 1 -maxdepth 1 | wc -l)"
cat /mnt/*.bin >/dev/null
dd if=/dev/zero of=/dev/null bs=32M count=2000000000 2>/dev/null &
busy=$!
echo "=== guest: read 192 MiB of files (Cached $(meminfo_kib Cached) KiB), a busy 32 MiB process runs"
sync_host ready
echo "=== guest after the limit: Cached $(meminfo_kib Cached) KiB, MemTotal $(meminfo_kib MemTotal) KiB, busy process alive: $(kill -0 $busy && echo yes || echo no)"
if kill -0 "$busy" 2>/dev/null; then result busy_survived true; else result busy_survived false; fi
kill "$busy"
