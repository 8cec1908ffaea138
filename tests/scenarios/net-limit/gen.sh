for i in 1 2 3 4 5 6 7 8; do
    gen_bytes "net-limit-$i" 32M >"file$i.bin"
done
