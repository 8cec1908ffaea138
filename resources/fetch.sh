#!/usr/bin/env bash
# Obtains the stock Debian guest kernel (the image package that linux-image-amd64
# depends on) and busybox-static through apt, unpacked into $BALLAST_CACHE/pkg/.
# Prints shell assignments, so callers do:  eval "$(resources/fetch.sh)"
#   BALLAST_KERNEL   .../boot/vmlinuz-<ver>       (bzImage; also the L1 test host's kernel)
#   BALLAST_KVER     <ver>
#   BALLAST_MODULES  .../lib/modules/<ver>/kernel
#   BALLAST_BUSYBOX  .../bin/busybox              (static)
#   BALLAST_L1_KERNEL, BALLAST_L1_KVER, BALLAST_L1_MODULES
#                    the same for the nested L1 test host's kernel: the guest kernel's
#                    package unless BALLAST_L1_SUITE names a suite (bookworm-backports)
#                    whose linux-image-amd64 to follow, or BALLAST_L1_KERNEL_PKG a package
# A second run with nothing new to fetch only asks apt-cache for the versions.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=resources/lib.sh
. "$here/lib.sh"

# Candidate versions of all the packages, from one apt-cache call (each call
# parses the package lists, ~0.5 s here).
declare -A version=()
read_versions() { # NAME...
    local name='' line
    version=()
    while IFS= read -r line; do
        case $line in
        [!\ ]*:) name=${line%:} ;;
        "  Candidate: (none)") ;;
        "  Candidate: "*) version[$name]=${line#  Candidate: } ;;
        esac
    done < <(apt-cache policy "$@" 2>/dev/null)
}

# fetch_pkg NAME -> sets pkgdir to the folder the package is unpacked in.
# (Not run in a subshell, so one apt-get update serves both packages.)
fetch_pkg() {
    local name=$1 ver dir tmp try
    for try in 1 2; do
        # A fresh machine has empty lists, and an old list may name a version the
        # mirror no longer serves: both are fixed by one apt-get update.
        [ "$try" = 2 ] && { apt_update_once; read_versions "$name"; }
        ver=${version[$name]:-}
        [ -n "$ver" ] || continue
        dir="$BALLAST_CACHE/pkg/${name}_${ver//:/_}"
        [ -e "$dir/.done" ] && { pkgdir=$dir; return 0; }
        mkdir -p "$BALLAST_CACHE/debs"
        rm -f "$BALLAST_CACHE/debs/${name}_"*.deb
        # Sandbox user root: the _apt user cannot write into a cache under /root.
        if (cd "$BALLAST_CACHE/debs" && apt-get download -qq -o APT::Sandbox::User=root "$name=$ver" >&2); then
            tmp=$(mktemp -d "$BALLAST_CACHE/pkg/.tmp.XXXXXX")
            dpkg -x "$BALLAST_CACHE/debs/${name}_"*.deb "$tmp"
            touch "$tmp/.done"
            rm -rf "$dir" && mv "$tmp" "$dir"
            rm -f "$BALLAST_CACHE/debs/${name}_"*.deb # the unpacked tree is what we keep
            log "unpacked $name $ver"
            pkgdir=$dir
            return 0
        fi
    done
    # Offline with a warm cache: use what an earlier run unpacked.
    dir=$(find "$BALLAST_CACHE/pkg" -maxdepth 2 -path "*/${name}_*/.done" 2>/dev/null | sort | tail -n1)
    [ -n "$dir" ] || die "cannot obtain package $name through apt"
    pkgdir=${dir%/.done}
    log "warning: apt failed, using cached $pkgdir"
}

mkdir -p "$BALLAST_CACHE/pkg"

# image_pkg [SUITE]: the kernel image package linux-image-amd64 depends on (in SUITE's
# version of it when given, else the candidate's).
image_pkg() {
    local meta=linux-image-amd64 ver
    if [ -n "${1:-}" ]; then
        ver=$(apt-cache madison linux-image-amd64 2>/dev/null | awk -v s="$1/" 'index($0, s) {print $3; exit}')
        [ -n "$ver" ] || return 0
        meta="linux-image-amd64=$ver"
    fi
    apt-cache depends "$meta" 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-/ {print $2; exit}'
}

# kernel_pkg EXPLICIT SUITE: the package to use, looked up once more after an apt-get
# update, or (offline) the newest one an earlier run unpacked.
kernel_pkg() {
    local k=$1
    [ -n "$k" ] && { echo "$k"; return 0; }
    k=$(image_pkg "$2")
    [ -n "$k" ] || { apt_update_once; k=$(image_pkg "$2"); }
    if [ -z "$k" ]; then
        k=$(find "$BALLAST_CACHE/pkg" -maxdepth 1 -name 'linux-image-*' -printf '%f\n' | sort | tail -n1)
        k=${k%%_*}
    fi
    [ -n "$k" ] || die "apt does not say which package linux-image-amd64 depends on${2:+ in $2 (is that suite in the apt sources?)}"
    echo "$k"
}

# kernel_files DIR: sets kernel, kver, modules from an unpacked kernel image package.
kernel_files() {
    kernel=$(find "$1/boot" -maxdepth 1 -name 'vmlinuz-*' | head -n1)
    [ -n "$kernel" ] || die "no boot/vmlinuz-* in $1"
    kver=${kernel##*/vmlinuz-}
    modules="$1/lib/modules/$kver/kernel"
    [ -d "$modules" ] || die "no $modules"
}

kpkg=$(kernel_pkg "${BALLAST_KERNEL_PKG:-}" "")
l1pkg=$kpkg
if [ -n "${BALLAST_L1_KERNEL_PKG:-}${BALLAST_L1_SUITE:-}" ]; then
    l1pkg=$(kernel_pkg "${BALLAST_L1_KERNEL_PKG:-}" "${BALLAST_L1_SUITE:-}")
fi

read_versions "$kpkg" "$l1pkg" busybox-static
fetch_pkg "$kpkg"
kernel_files "$pkgdir"
printf 'BALLAST_KERNEL=%q\nBALLAST_KVER=%q\nBALLAST_MODULES=%q\n' "$kernel" "$kver" "$modules"
fetch_pkg "$l1pkg"
kernel_files "$pkgdir"
printf 'BALLAST_L1_KERNEL=%q\nBALLAST_L1_KVER=%q\nBALLAST_L1_MODULES=%q\n' "$kernel" "$kver" "$modules"
fetch_pkg busybox-static
busybox="$pkgdir/bin/busybox"
[ -x "$busybox" ] || die "no bin/busybox in busybox-static"
printf 'BALLAST_BUSYBOX=%q\n' "$busybox"
