# The VMM's own link finds the agent (GET /vm/memory), then a host tool reaches it through
# the hybrid vsock socket with CONNECT 52 and asks for 96 MiB of file cache.
wait_console 'BALLAST-SYNC filled' || exit 1
host_result host_vmm_agent_ready "$(wait_until 30 agent_ready && echo true || echo false)"
host_result host_guest_file_bytes "$(status_field memory file_bytes)"
hello=$(ballast agent --vsock-sock /tmp/agent-vsock.sock hello)
host_result host_hybrid_hello "$([ -n "$(echo "$hello" | json_field agent_version)" ] && echo true || echo false)"
reply=$(ballast agent --vsock-sock /tmp/agent-vsock.sock deactivate-file 24576)
echo "$reply"
# The reply's passes in order: big files, then small ones.
host_result host_freed_pages "$(echo "$reply" | json_field freed_pages)"
host_result host_big_freed_pages "$(echo "$reply" | json_object big | json_field freed_pages)"
host_result host_small_freed_pages "$(echo "$reply" | json_object small | json_field freed_pages)"
send_guest done
