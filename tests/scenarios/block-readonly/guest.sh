# A read-only disk: the guest sees it read-only and every way of writing to it fails.
# What each attempt says is reported as it is; after.sh checks the image is unchanged.
result ro_flag "$(cat /sys/block/vda/ro)"
mkdir -p /mnt
mount_opt() { awk '$2 == "/mnt" { split($4, o, ","); print o[1] }' /proc/mounts; }
if out=$(mount -t ext4 -o rw /dev/vda /mnt 2>&1); then
    result rw_mount "mounted, $(mount_opt)${out:+: $out}"
else
    result rw_mount "refused: $out"
    mount -t ext4 -o ro /dev/vda /mnt || { result mounted false; exit 1; }
fi
result mounted_as "$(mount_opt)"
result read_back "$(cat /mnt/hello.txt)"

if out=$(sh -c 'echo x >/mnt/new.txt' 2>&1); then
    result file_write_refused false
else
    result file_write_refused true
    result file_write_error "$out"
fi
if out=$(mount -o remount,rw /mnt 2>&1); then
    result remount_rw_refused false
    result remount_rw "$(mount_opt)"
else
    result remount_rw_refused true
    result remount_rw_error "$out"
fi
# Around the file system: straight to the block device.
if out=$(dd if=/dev/zero of=/dev/vda bs=4096 count=1 seek=100 conv=fsync 2>&1); then
    result raw_write_refused false
else
    result raw_write_refused true
    result raw_write_error "$(echo "$out" | head -n 1)"
fi
sync
result io_errors_in_dmesg "$(dmesg | grep -c 'I/O error' || true)"
dmesg | grep -i -e vda -e 'read-only' -e 'write-protect' | tail -n 5
