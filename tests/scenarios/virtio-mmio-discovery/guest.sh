# ballast attaches a virtio-balloon device over virtio-mmio by default. The stock
# Debian kernel finds virtio-mmio devices only through ACPI (_HID LNRO0005), so
# the platform device must exist and virtio_balloon must be bound to device 0x0005.
if [ -e /sys/bus/platform/devices/LNRO0005:00 ]; then lnro=true; else lnro=false; fi
result lnro0005_platform_device "$lnro"

bound=false
for d in /sys/bus/virtio/devices/*; do
    [ -e "$d/device" ] || continue
    drv=$(readlink "$d/driver" 2>/dev/null || true)
    echo "virtio device ${d##*/}: id $(cat "$d/device"), driver ${drv##*/}"
    if [ "$(cat "$d/device")" = 0x0005 ] && [ "${drv##*/}" = virtio_balloon ]; then bound=true; fi
done
result virtio_balloon_bound "$bound"
