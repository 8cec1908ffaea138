# Runs only if the initramfs did not switch to the disk (ballast.root=/dev/vda).
result switched_root false
