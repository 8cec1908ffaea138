gen_bytes hot 64M >hot.bin
for i in 1 2 3 4 5 6; do
    gen_bytes "cold-$i" 32M >"cold$i.bin"
done
