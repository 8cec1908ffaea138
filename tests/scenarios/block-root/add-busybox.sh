# The static busybox the images use (the harness has fetched it), with its applet links.
mkdir -p bin dev proc sys tmp
install -m 755 "$BALLAST_BUSYBOX" bin/busybox
for a in $(bin/busybox --list-full); do
    mkdir -p "$(dirname "$a")"
    [ -e "$a" ] || ln -s /bin/busybox "$a"
done
echo "the root disk of block-root" >marker
