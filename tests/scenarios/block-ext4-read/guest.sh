# The guest init mounted the disk (ballast.mount=/dev/vda:/mnt): read every file back
# and report its checksum; expect.json holds what gen-files.sh wrote.
if grep -q ' /mnt ext4 ' /proc/mounts; then result mounted true; else result mounted false; exit 1; fi
result vda_sectors "$(cat /sys/block/vda/size)"
result vda_ro "$(cat /sys/block/vda/ro)"
cd /mnt || exit 1
for f in hello.txt small.bin odd.bin empty big.bin deep/er/bigger.bin; do
    result "sha256_$(echo "$f" | tr '/.' '__')" "$(sha256sum "$f" | cut -d' ' -f1)"
done
result files "$(find . -path ./lost+found -prune -o -type f -print | wc -l)"
result hello "$(cat hello.txt)"
