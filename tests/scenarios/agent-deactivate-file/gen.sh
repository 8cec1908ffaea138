for i in 1 2 3 4; do
    gen_bytes "agent-big-$i" 24M >"big$i.bin"
done
mkdir small
i=0
while [ $i -lt 100 ]; do
    gen_bytes "agent-small-$i" 40K >"small/s$i.bin"
    i=$((i + 1))
done
