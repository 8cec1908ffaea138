# Through the hybrid vsock socket (CONNECT 52): the agent reports swap, then deactivates
# 32 MiB of anon memory, once with MADV_COLD and once urgently with MADV_PAGEOUT.
sock=/tmp/agent-anon-vsock.sock
pages=8192
wait_console 'BALLAST-SYNC held' || exit 1
hello=$(ballast agent --vsock-sock "$sock" hello)
echo "$hello"
host_result host_hello_swap "$(echo "$hello" | json_field swap)"
reply=$(ballast agent --vsock-sock "$sock" deactivate-anon "$pages")
echo "$reply"
host_result host_cold_deactivated_pages "$(echo "$reply" | json_field deactivated_pages)"
host_result host_cold_swapped_pages "$(echo "$reply" | json_field swapped_pages)"
send_guest cold
wait_console 'BALLAST-SYNC cold' || exit 1
reply=$(ballast agent --vsock-sock "$sock" deactivate-anon "$pages" --urgent)
echo "$reply"
host_result host_urgent_deactivated_pages "$(echo "$reply" | json_field deactivated_pages)"
host_result host_urgent_swapped_pages "$(echo "$reply" | json_field swapped_pages)"
host_result host_urgent_big_processes "$(echo "$reply" | json_object big | json_field processes_touched)"
send_guest urgent
