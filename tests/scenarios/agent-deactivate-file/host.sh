# The VMM's own link finds the agent (GET /vm/memory), then a host tool reaches it through
# the hybrid vsock socket with CONNECT 52 and asks for 96 MiB of file cache.
field() { sed -n "s/.*\"$1\": *\"*\\([a-z0-9_]*\\).*/\\1/p" | head -n 1; }
wait_console 'BALLAST-SYNC filled' || exit 1
i=0
while ! ballast status --json | grep -q '"state": "ready"' && [ $i -lt 100 ]; do sleep 0.3; i=$((i + 1)); done
status=$(ballast status --json)
host_result host_vmm_agent_ready "$(echo "$status" | grep -q '"state": "ready"' && echo true || echo false)"
host_result host_guest_file_bytes "$(echo "$status" | field file_bytes)"
hello=$(ballast agent --vsock-sock /tmp/agent-vsock.sock hello)
host_result host_hybrid_hello "$(echo "$hello" | grep -q '"agent_version"' && echo true || echo false)"
reply=$(ballast agent --vsock-sock /tmp/agent-vsock.sock deactivate-file 24576)
echo "$reply"
# The reply's passes in order: big files, then small ones.
host_result host_freed_pages "$(echo "$reply" | field freed_pages)"
host_result host_big_freed_pages "$(echo "$reply" | sed -n '/"big"/,/}/p' | field freed_pages)"
host_result host_small_freed_pages "$(echo "$reply" | sed -n '/"small"/,/}/p' | field freed_pages)"
send_guest done
