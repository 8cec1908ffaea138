# The host side (L1 in nested mode): ping the guest, check GET /vm lists the device and the
# guest's driver took it, receive 32 MiB and compare checksums, send 32 MiB, and read the
# device's counters.
guest=192.168.217.2
mib=32
tap=bt-net0
wait_console 'BALLAST-SYNC pinged' || exit 1
if ping -c 3 -W 5 "$guest" >/dev/null; then host_result host_ping true; else host_result host_ping false; fi
host_result host_vm_net_tap "$(status_field vm tap)"
host_result host_vm_net_active "$(status_field vm active)"
host_result host_vm_net_mac_matches "$([ "$(status_field vm mac)" = "$(console_line 'guest_mac' | sed 's/.*"guest_mac":"\([^"]*\)".*/\1/')" ] && echo true || echo false)"

# Guest to host.
rm -f /tmp/npt-hold /tmp/npt-g2h.sum
mkfifo /tmp/npt-hold
nc -l -p 5001 <>/tmp/npt-hold | sha256sum >/tmp/npt-g2h.sum &
sleep 1
t0=$(now_s)
send_guest go
wait_console 'BALLAST-SYNC sent' 900 || exit 1
# The checksum is written once the guest's stream has ended here (bounded, not a bare `wait`).
g2h_summed() { [ -s /tmp/npt-g2h.sum ]; }
wait_until 60 g2h_summed || { echo "the checksum of what was received never came; processes:"; ps; exit 1; }
host_result host_guest_to_host_seconds "$(since_s "$t0")"
sent=$(console_line 'BALLAST-SYNC sent' | awk '{ print $3 }')
got=$(cut -d' ' -f1 /tmp/npt-g2h.sum)
host_result host_guest_to_host_matches "$([ -n "$got" ] && [ "$got" = "$sent" ] && echo true || echo false)"
send_guest ok

# Host to guest.
wait_console 'BALLAST-SYNC listening' || exit 1
rm -f /tmp/npt-h2g.fifo /tmp/npt-h2g.sum
mkfifo /tmp/npt-h2g.fifo
sha256sum </tmp/npt-h2g.fifo >/tmp/npt-h2g.sum &
send_guest sending
t0=$(now_s)
dd if=/dev/urandom bs=64k count=$((mib * 16)) 2>/dev/null | tee /tmp/npt-h2g.fifo | nc "$guest" 5002
host_result host_host_to_guest_seconds "$(since_s "$t0")"
h2g_summed() { [ -s /tmp/npt-h2g.sum ]; }
wait_until 60 h2g_summed || { echo "the checksum of what was sent never came; processes:"; ps; exit 1; }
wait_console 'BALLAST-SYNC received' 300 || exit 1
received=$(console_line 'BALLAST-SYNC received' | awk '{ print $3 }')
ours=$(cut -d' ' -f1 /tmp/npt-h2g.sum)
host_result host_host_to_guest_matches "$([ -n "$ours" ] && [ "$ours" = "$received" ] && echo true || echo false)"

# The device's counters; null, not a shell arithmetic error, when the API does not answer.
counter() { metric "ballast_net_$1_total{tap=\"$tap\"}"; }
counters() {
    _a=$(counter "$1") _b=$(counter "$2")
    case "$_a:$_b" in *[!0-9:]* | :* | *:) echo null ;; *) echo $((_a + _b)) ;; esac
}
host_result host_net_rx_mib "$(metric_mib "ballast_net_rx_bytes_total{tap=\"$tap\"}" || echo null)"
host_result host_net_tx_mib "$(metric_mib "ballast_net_tx_bytes_total{tap=\"$tap\"}" || echo null)"
host_result host_net_refused_chains "$(counters rx_refused_chains tx_refused_chains)"
host_result host_net_dropped "$(counters rx_dropped tx_dropped)"
send_guest done
