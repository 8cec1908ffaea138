printf 'read me\n' >hello.txt
gen_bytes readonly 1M >data.bin
