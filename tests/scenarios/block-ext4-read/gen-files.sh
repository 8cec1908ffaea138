# The files of the disk, the same at every build (gen_bytes is seeded): a text file,
# a one-block file, a file that ends inside a block, an empty one, and two of
# several MiB, one of them in a sub-folder.
printf 'hello from the host\n' >hello.txt
gen_bytes small 4096 >small.bin
gen_bytes odd 100003 >odd.bin
: >empty
gen_bytes big 8M >big.bin
mkdir -p deep/er
gen_bytes bigger 24M >deep/er/bigger.bin
