# The guest side of host.sh's checks: tick on the console (so the host can see a pause),
# then read one line the host sends on the console and report it, and a 300-byte one.
(i=0; while [ $i -lt 600 ]; do i=$((i + 1)); echo "tick $i"; sleep 0.1; done) &
ticker=$!
sync_host ready
kill "$ticker"
result guest_got "$host_line"
echo "BALLAST-SYNC got"
read -r long
result guest_long_line_length "${#long}"
echo "BALLAST-SYNC got-long"
