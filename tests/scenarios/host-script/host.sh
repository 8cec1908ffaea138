# Everything host.sh gets: the PID, the API socket and `ballast` on PATH, the console as
# a file, a line to the guest's console; and pause/resume seen from the console.
wait_console 'BALLAST-SYNC ready' 300 || exit 1
host_result host_pid_is_ballast "$(grep -q ballast "/proc/$BALLAST_PID/cmdline" && echo true || echo false)"
host_result host_rss_kib "$(ballast_rss_kib)"
ballast status || exit 1
status=$(ballast status --json) || exit 1
host_result host_status_vcpus "$(echo "$status" | json_object vm | json_field vcpus)"

# Pause: the guest stops ticking, and ballast's CPU time (its vCPU thread's, mostly)
# almost stops growing; the guest's ticker (a fork and exec of sleep each time) keeps
# the vCPU busy while it runs.
ticks() { grep -c '^tick ' "$BALLAST_CONSOLE"; }
cpu() { awk '{ print $14 + $15 }' "/proc/$BALLAST_PID/stat"; }
wait_console '^tick 3$' 60 || exit 1
c0=$(cpu)
sleep 3
c1=$(cpu)
ballast pause || exit 1
sleep 1 # a tick already on its way may still land
t0=$(ticks) c2=$(cpu)
sleep 3
t1=$(ticks) c3=$(cpu)
ballast resume || exit 1
host_result host_ticks_while_paused $((t1 - t0))
host_result host_cpu_ticks_running $((c1 - c0))
host_result host_cpu_ticks_paused $((c3 - c2))
host_result host_paused_cpu_under_a_quarter "$([ $((4 * (c3 - c2))) -lt $((c1 - c0)) ] && echo true || echo false)"
wait_console "^tick $((t1 + 2))\$" 60 || exit 1
host_result host_ticks_after_resume true

send_guest "hello 42"
wait_console 'BALLAST-SYNC got' 60 || exit 1
host_result host_saw_reply "$(console_line 'guest_got' | sed 's/.*BALLAST-RESULT //')"

# A line longer than the guest's 64-byte input FIFO arrives whole: ballast reads stdin again
# each time the guest has drained the FIFO (vmm/src/console.rs).
send_guest "$(printf '%300s' '' | tr ' ' x)"
wait_console 'BALLAST-SYNC got-long' 60 || exit 1
