# The guest synced and powered off without unmounting. Read the files out of the
# images as they are, and again from a copy whose journal e2fsck has replayed.
want=$(seq 1 200000 | sha256sum | cut -d' ' -f1)
sha_in() { debugfs -R "cat $2" "$1" 2>/dev/null | sha256sum | cut -d' ' -f1; }
if [ "$(sha_in "$DISK_DATA" /written.txt)" = "$want" ]; then ok=true; else ok=false; fi
host_result host_written_matches "$ok"
host_result host_vdb_file "$(debugfs -R 'cat /which.txt' "$DISK_SCRATCH" 2>/dev/null)"
echo "debugfs stat /written.txt:"
debugfs -R 'stat /written.txt' "$DISK_DATA" 2>&1 | head -n 12

copy=$(mktemp)
trap 'rm -f "$copy"' EXIT
cp --sparse=always "$DISK_DATA" "$copy"
rc=0
e2fsck -fy "$copy" || rc=$?
host_result host_e2fsck_exit "$rc"
if [ "$(sha_in "$copy" /written.txt)" = "$want" ]; then ok=true; else ok=false; fi
host_result host_written_matches_after_fsck "$ok"
