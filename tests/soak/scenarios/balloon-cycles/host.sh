# Each round: inflate the balloon to 320 MiB, give the guest 20 s, empty it, 10 s more. Only
# `ballast balloon set` is used, which tests/harness/qemu-as-ballast.sh also takes (over QMP),
# so the same rounds run under both VMMs.
c=1
while [ $c -le 4 ]; do
    wait_console "BALLAST-SYNC cycle$c" 240 || exit 1
    ballast balloon set 320M >/dev/null || exit 1
    sleep 20
    ballast balloon set 0 >/dev/null || exit 1
    sleep 10
    send_guest go
    c=$((c + 1))
done
