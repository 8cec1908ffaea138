for i in 1 2 3 4 5 6; do
    gen_bytes "churn-$i" 32M >"file$i.bin"
done
