# Shared helpers for the resources/ and tests/harness/ scripts (sourced, not run).
# shellcheck shell=bash

# Downloads and built images live outside the repository so a fresh clone or
# `git clean` does not throw away ~80 MB of kernel package.
BALLAST_CACHE="${BALLAST_CACHE:-$HOME/.cache/ballast}"
export BALLAST_CACHE

log() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# True once `apt-get update` has run in this process (it is slow-ish and only
# needed on a fresh machine or when the lists name a version the mirror dropped).
_apt_updated=0
apt_update_once() {
    [ "$_apt_updated" = 1 ] && return 0
    log "apt-get update"
    apt-get update -qq >&2
    _apt_updated=1
}

apt_lists_empty() {
    ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null
}

# ensure_apt PKG... — install the Debian packages that are missing, nothing else.
ensure_apt() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" = 0 ] || die "missing packages ${missing[*]} (run as root or install them)"
    apt_lists_empty && apt_update_once
    log "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2 || {
        apt_update_once
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
    }
}

# The nested L1 test host needs QEMU 10 or newer as its emulator: under Debian 12's QEMU 7.2,
# guests of KVM inside L1 triple-faulted or took L1 down in a third of the soak's boots, and
# under QEMU 10 in none (README, "The nested test host"; tests/soak/nested.sh).
QEMU_MIN_MAJOR=10

# qemu_major VERSION: the major number of a Debian package version (1:10.0.2+ds-2 -> 10).
qemu_major() { local v=${1#*:}; echo "${v%%.*}"; }

# ensure_qemu: qemu-system-x86 of at least QEMU_MIN_MAJOR, from the distribution's own suite
# when it has one (Debian 13), else from bookworm-backports on Debian 12 (its source list
# file is added once, as /etc/apt/sources.list.d/ballast-bookworm-backports.sources).
ensure_qemu() {
    local have cand list=/etc/apt/sources.list.d/ballast-bookworm-backports.sources
    have=$(dpkg-query -W -f='${Status} ${Version}' qemu-system-x86 2>/dev/null || true)
    if [[ $have == "install ok installed "* ]] && [ "$(qemu_major "${have##* }")" -ge "$QEMU_MIN_MAJOR" ]; then
        return 0
    fi
    [ "$(id -u)" = 0 ] || die "QEMU $QEMU_MIN_MAJOR or newer (qemu-system-x86) is needed for the nested L1 test host; run as root or install it"
    apt_lists_empty && apt_update_once
    cand=$(apt-cache policy qemu-system-x86 2>/dev/null | sed -n 's/^  Candidate: //p')
    if [ -n "$cand" ] && [ "$cand" != "(none)" ] && [ "$(qemu_major "$cand")" -ge "$QEMU_MIN_MAJOR" ]; then
        log "apt-get install qemu-system-x86 ($cand)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-system-x86 >&2
        return 0
    fi
    . /etc/os-release
    [ "${VERSION_CODENAME:-}" = bookworm ] ||
        die "this distribution offers qemu-system-x86 ${cand:-(none)}; the nested L1 test host needs QEMU $QEMU_MIN_MAJOR or newer"
    if [ ! -f "$list" ]; then
        log "adding bookworm-backports to apt's sources ($list) for QEMU $QEMU_MIN_MAJOR"
        printf '%s\n' 'Types: deb' 'URIs: http://deb.debian.org/debian' 'Suites: bookworm-backports' \
            'Components: main' 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' >"$list"
        _apt_updated=0
    fi
    apt_update_once
    log "apt-get install -t bookworm-backports qemu-system-x86"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -t bookworm-backports qemu-system-x86 >&2
}

# Content hash of files and strings, for cache keys (a file counts by its content
# only, so the same scripts in another checkout share the cached images).
cache_key() {
    local a
    for a in "$@"; do
        if [ -f "$a" ]; then sha256sum <"$a"; else printf '%s\n' "$a"; fi
    done | sha256sum | cut -c1-16
}

# Sets BALLAST_KERNEL, BALLAST_KVER, BALLAST_MODULES, BALLAST_BUSYBOX and the
# BALLAST_L1_{KERNEL,KVER,MODULES} of the nested L1 test host (see fetch.sh),
# keeping values a calling script already exported (one apt look-up per run).
ensure_fetched() {
    if [ -f "${BALLAST_KERNEL:-}" ] && [ -d "${BALLAST_MODULES:-}" ] && [ -x "${BALLAST_BUSYBOX:-}" ] &&
        [ -f "${BALLAST_L1_KERNEL:-}" ] && [ -d "${BALLAST_L1_MODULES:-}" ]; then
        return 0
    fi
    eval "$("$(dirname "${BASH_SOURCE[0]}")/fetch.sh")"
    export BALLAST_KERNEL BALLAST_KVER BALLAST_MODULES BALLAST_BUSYBOX \
        BALLAST_L1_KERNEL BALLAST_L1_KVER BALLAST_L1_MODULES
}

# pack DIR OUT: a newc cpio of DIR, owned by root, gzip'd.
pack() {
    (cd "$1" && find . -mindepth 1 -print0 | LC_ALL=C sort -z |
        cpio --null -o -H newc -R 0:0 --quiet) | gzip -6 >"$2"
}

# busybox_root DIR: busybox, its applet links (made here rather than by
# `busybox --install` at every boot) and the usual empty folders.
busybox_root() {
    local applet
    mkdir -p "$1"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,run,etc/ballast,lib/modules}
    install -m 755 "$BALLAST_BUSYBOX" "$1/bin/busybox"
    "$BALLAST_BUSYBOX" --list-full | while read -r applet; do
        [ -e "$1/$applet" ] || ln -s /bin/busybox "$1/$applet"
    done
}

# copy_module REL DEST_DIR [MODULES]: REL is a path under lib/modules/<ver>/kernel
# (MODULES, default $BALLAST_MODULES) without .ko. The package may ship .ko, .ko.xz or
# .ko.zst; busybox insmod only takes a plain .ko, so decompress here.
# Returns 1 when the kernel has the module built in (modules.builtin lists it): there
# is nothing to copy or load then.
copy_module() {
    local dir=${3:-$BALLAST_MODULES} src="${3:-$BALLAST_MODULES}/$1" name=${1##*/}
    if [ -f "$src.ko" ]; then cp "$src.ko" "$2/$name.ko"
    elif [ -f "$src.ko.xz" ]; then xz -dc "$src.ko.xz" >"$2/$name.ko"
    elif [ -f "$src.ko.zst" ]; then zstd -qdc "$src.ko.zst" >"$2/$name.ko"
    elif [ -f "$src.ko.gz" ]; then gzip -dc "$src.ko.gz" >"$2/$name.ko"
    elif grep -qx "kernel/$1.ko" "${dir%/kernel}/modules.builtin" 2>/dev/null; then return 1
    else die "module $1 not found under $dir"; fi
}

# cached_image NAME KEY BUILDER: prints the path of $BALLAST_CACHE/images/NAME-KEY.cpio.gz,
# building it first with `BUILDER ROOTDIR` + pack when missing. Stale NAME-* go.
cached_image() {
    local name=$1 key=$2 builder=$3 img root
    img="$BALLAST_CACHE/images/$name-$key.cpio.gz"
    if [ ! -f "$img" ]; then
        log "building $img"
        mkdir -p "$BALLAST_CACHE/images"
        root=$(mktemp -d)
        "$builder" "$root"
        pack "$root" "$img.tmp.$$"
        rm -rf "$root"
        mv "$img.tmp.$$" "$img"
        find "$BALLAST_CACHE/images" -maxdepth 1 -name "$name-*.cpio.gz" ! -path "$img" -delete
    fi
    echo "$img"
}

# append_segment BASE DIR OUT: OUT = BASE followed by a cpio.gz of DIR (if not empty).
append_segment() {
    local base=$1 dir=$2 out=$3
    mkdir -p "$(dirname "$out")"
    if [ -n "$dir" ] && [ -n "$(ls -A "$dir")" ]; then
        pack "$dir" "$out.seg.$$"
        cat "$base" "$out.seg.$$" >"$out.tmp.$$"
        rm -f "$out.seg.$$"
    else
        cp "$base" "$out.tmp.$$"
    fi
    mv "$out.tmp.$$" "$out"
}
