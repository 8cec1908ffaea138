# The image must be byte for byte what the harness built.
now=$(sha256sum <"$DISK_RO" | cut -d' ' -f1)
echo "built: $DISK_RO_SHA256"
echo "now:   $now"
if [ "$now" = "$DISK_RO_SHA256" ]; then ok=true; else ok=false; fi
host_result host_image_unchanged "$ok"
