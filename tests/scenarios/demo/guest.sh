# A tour of the guest, for `make demo`.
echo "=== guest: $(uname -sr) on $(awk -F': ' '/^vendor_id/ {v = $2} /^model name/ {print v ", " $2; exit}' /proc/cpuinfo)"
echo "=== vCPUs: $(nproc), memory: $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) KiB, up $(cut -d' ' -f1 /proc/uptime) s"
echo "=== kernel command line: $(cat /proc/cmdline)"
echo "=== clocksource: $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"
echo "=== virtio devices (virtio-mmio, found through ACPI):"
for d in /sys/bus/virtio/devices/*; do
    [ -e "$d/device" ] || { echo "    none"; break; }
    drv=$(readlink "$d/driver" 2>/dev/null || true)
    echo "    ${d##*/}: device id $(cat "$d/device"), driver ${drv##*/}, on $(basename "$(readlink -f "$d/..")")"
done
echo "=== memory pressure (PSI): $(head -n1 /proc/pressure/memory 2>/dev/null || echo n/a)"
echo "=== modules loaded: $(awk '{print $1}' /proc/modules | tr '\n' ' ')"
result nproc "$(nproc)"
result memtotal_kib "$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
result kernel "$(uname -r)"
result uptime_s "$(cut -d' ' -f1 /proc/uptime)"
result virtio_devices "$(find /sys/bus/virtio/devices -mindepth 1 -maxdepth 1 | wc -l)"
