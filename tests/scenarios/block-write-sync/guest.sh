# Write a file on each disk, sync, and power off without unmounting: after.sh must
# find both files in the images, with the right content, on the right disk.
mkdir -p /data /scratch
mount -t ext4 /dev/vda /data || exit 1
mount -t ext4 /dev/vdb /scratch || exit 1
result vda_sectors "$(cat /sys/block/vda/size)"
result vdb_sectors "$(cat /sys/block/vdb/size)"
seq 1 200000 >/data/written.txt
echo "written on vdb" >/scratch/which.txt
result written_sha256 "$(sha256sum /data/written.txt | cut -d' ' -f1)"
sync
result synced true
