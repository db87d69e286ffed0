#!/bin/sh
# Builds the Debian package from binaries already built (default: the debug build the tests
# ran, ${CARGO_TARGET_DIR:-target}/debug; SNAPFS_BIN=DIR for others), checks it with lintian,
# installs it with apt-get, and checks what it installed:
#   snapfs --version, man -w for each page, systemd-analyze verify of the user unit, and one
#   mount through mount(8) -t fuse.snapfs with the installed helper, listed by findmnt and
#   unmounted with umount(8).
# Then it removes the package again. Needs root, /dev/fuse, debhelper and lintian
# (apt-get install debhelper lintian). .ci/run runs it after the tests.
# The release package is built the same way without SNAPFS_PREBUILT (see packaging/README.md).

set -eu

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
bin=${SNAPFS_BIN:-${CARGO_TARGET_DIR:-$top/target}/debug}
for b in snapfsd snapfs; do
    [ -x "$bin/$b" ] || { echo "deb-check: $bin/$b not found; build it or set SNAPFS_BIN" >&2; exit 2; }
done
[ "$(id -u)" -eq 0 ] || { echo "deb-check: installs a package, so it runs as root" >&2; exit 2; }
if dpkg-query -W -f '${Status}' snapfs 2>/dev/null | grep -q 'install ok installed'; then
    echo "deb-check: a snapfs package is installed already; remove it first (apt-get purge snapfs)" >&2
    exit 2
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/snapfs-deb.XXXXXX")
chmod 755 "$tmp"
link=
installed=
# shellcheck disable=SC2317 # called by the trap
cleanup() {
    if mountpoint -q "$tmp/mnt" 2>/dev/null; then
        umount "$tmp/mnt" 2>/dev/null || fusermount3 -u -z "$tmp/mnt" 2>/dev/null || umount -l "$tmp/mnt"
    fi
    [ -n "$installed" ] && apt-get purge -y -qq snapfs >/dev/null 2>&1
    if [ -n "$link" ]; then
        (cd "$top" && DEB_OUT="$tmp" fakeroot debian/rules clean >/dev/null 2>&1)
        rm -f "$link"
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() {
    echo "deb-check: $*"
}

# debian/ is this folder, linked at the top of the tree.
if [ ! -e "$top/debian" ]; then
    ln -s packaging/debian "$top/debian"
    link=$top/debian
fi
step "building the package from $bin"
(cd "$top" && SNAPFS_PREBUILT="$bin" DEB_OUT="$tmp" fakeroot debian/rules binary >"$tmp/build.log" 2>&1) || {
    cat "$tmp/build.log" >&2
    exit 1
}
deb=$(ls "$tmp"/snapfs_*.deb)
step "built $(basename "$deb"): $(du -k "$deb" | cut -f1) KiB"

step "lintian: no error and no warning allowed"
lintian --fail-on error,warning --tag-display-limit 0 "$deb"

step "installing"
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$deb" >"$tmp/apt.log" 2>&1 || {
    cat "$tmp/apt.log" >&2
    exit 1
}
installed=1

/usr/bin/snapfs --version
for page in snapfs snapfsd snapfs.toml snapfs-format; do
    man -w "$page" >/dev/null || { echo "deb-check: man page $page not found" >&2; exit 1; }
done
step "man pages found"
systemd-analyze verify /usr/lib/systemd/user/snapfs.service
step "the user unit verifies"
for f in /usr/share/bash-completion/completions/snapfs /usr/share/zsh/vendor-completions/_snapfs \
    /usr/share/fish/vendor_completions.d/snapfs.fish /usr/share/doc/snapfs/config.toml.example; do
    [ -s "$f" ] || { echo "deb-check: $f missing" >&2; exit 1; }
done

# One mount through the installed helper, with everything snapfs keeps under $tmp (mount(8)
# clears HOME; the XDG variables pass).
export XDG_CONFIG_HOME="$tmp/config" XDG_CACHE_HOME="$tmp/cache" XDG_DATA_HOME="$tmp/data" \
    XDG_STATE_HOME="$tmp/state" XDG_RUNTIME_DIR="$tmp/run"
mkdir -p "$tmp/mnt"
mount -t fuse.snapfs snapfs "$tmp/mnt"
findmnt -t fuse.snapfs "$tmp/mnt" >/dev/null || { echo "deb-check: not listed as fuse.snapfs" >&2; exit 1; }
[ -d "$tmp/mnt/cloud/local/snapshots" ] || { echo "deb-check: the mount shows no cloud/local" >&2; exit 1; }
umount "$tmp/mnt"
step "mounted with mount -t fuse.snapfs, listed by findmnt, unmounted"
step "ok"
