#!/bin/sh
# Checks the packaging against the real binaries:
#   1. snapfsd mounts with config.toml.example as shipped, and stops (unmounting, status 0)
#      on SIGTERM;
#   2. the same with every commented-out setting of the example switched on (file:// URLs
#      moved into a temporary directory), so each documented key and value really parses;
#   3. as root only: mount(8) mounts through mount.snapfs, installed for the test as
#      /sbin/mount.fuse.snapfs, and umount(8) stops the daemon.
# Needs /dev/fuse and the binaries (default: ${CARGO_TARGET_DIR:-target}/debug), e.g.
#   cargo build -p snapfsd -p snapfs && sh packaging/check.sh
# Every mount, process and file it makes is removed on exit, also on failure.

set -u

here=$(cd "$(dirname "$0")" && pwd)
bin=${SNAPFS_BIN:-${CARGO_TARGET_DIR:-$here/../target}/debug}
for b in snapfsd snapfs; do
    [ -x "$bin/$b" ] || { echo "check: $bin/$b not found; build it or set SNAPFS_BIN" >&2; exit 2; }
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/snapfs-check.XXXXXX")
chmod 755 "$tmp"
daemon=
helper_link=
# shellcheck disable=SC2317 # called by the trap
cleanup() {
    [ -n "$daemon" ] && kill -TERM "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
    for m in "$tmp"/mnt*; do
        if mountpoint -q "$m" 2>/dev/null; then
            umount "$m" 2>/dev/null || fusermount3 -u -z "$m" 2>/dev/null || umount -l "$m"
        fi
    done
    [ -n "$helper_link" ] && rm -f "$helper_link"
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

failed=0
fail() {
    echo "FAIL: $*" >&2
    failed=1
}
pass() {
    echo "ok: $*"
}

# Everything the daemon and the CLI keep goes under $tmp.
export HOME="$tmp/home" XDG_CONFIG_HOME="$tmp/config" XDG_CACHE_HOME="$tmp/cache" \
    XDG_DATA_HOME="$tmp/data" XDG_STATE_HOME="$tmp/state" XDG_RUNTIME_DIR="$tmp/run"
mkdir -p "$HOME" "$XDG_RUNTIME_DIR"

# Waits up to 10 s for the mount at $1 to show its README.
wait_mounted() {
    i=0
    while [ $i -lt 100 ]; do
        [ -f "$1/README" ] && return 0
        [ -n "$daemon" ] && ! kill -0 "$daemon" 2>/dev/null && return 1
        sleep 0.1
        i=$((i + 1))
    done
    return 1
}

# Runs snapfsd on a fresh mount point with config $1, checks the remotes $2 (space-separated)
# appear under cloud/, then stops it with SIGTERM and expects status 0 and no mount left.
run_daemon() {
    config=$1
    want=$2
    what=$3
    mnt="$tmp/mnt.$(basename "$config")"
    mkdir -p "$mnt"
    "$bin/snapfsd" --mountpoint "$mnt" --config "$config" 2>"$tmp/log" &
    daemon=$!
    if ! wait_mounted "$mnt"; then
        fail "$what: not mounted; log:"
        sed 's/^/    /' "$tmp/log" >&2
        return
    fi
    got=$(ls "$mnt/cloud" | tr '\n' ' ')
    [ "$got" = "$want " ] || fail "$what: cloud/ holds '$got', expected '$want '"
    kill -TERM "$daemon"
    wait "$daemon"
    status=$?
    daemon=
    [ $status -eq 0 ] || fail "$what: snapfsd exited with $status after SIGTERM"
    if mountpoint -q "$mnt"; then
        fail "$what: still mounted after SIGTERM"
    else
        pass "$what: mounted, remotes $want, SIGTERM unmounted, exit 0"
    fi
}

# 1. The example as shipped.
run_daemon "$here/config.toml.example" "local" "example as shipped"

# 2. Every "#key = value" and "#[[table]]" line switched on.
mkdir -p "$tmp/remotes"
# The HiveMQ table names its password by variable; the broker itself need not be there.
export HIVEMQ_PASSWORD=check
sed -e 's/^#\(\[\{1,2\}[a-z0-9]*\]\{1,2\}\)$/\1/' \
    -e 's/^#\([a-z_]* = \)/\1/' \
    -e "s|file:///home/alice/|file://$tmp/remotes/home/|" \
    -e "s|file:///mnt/backup/|file://$tmp/remotes/backup/|" \
    "$here/config.toml.example" >"$tmp/all-settings.toml"
if grep -q 'file:///home/alice\|file:///mnt/' "$tmp/all-settings.toml"; then
    fail "all settings: a file:// URL was not moved into the test directory"
else
    run_daemon "$tmp/all-settings.toml" "backup local scratch" "example, every setting on"
fi

# 3. mount(8) and fstab-style options through the helper (root only: it goes into /sbin).
if [ "$(id -u)" -ne 0 ]; then
    echo "skip: mount(8) helper (needs root)"
elif [ -e /sbin/mount.fuse.snapfs ]; then
    echo "skip: mount(8) helper (/sbin/mount.fuse.snapfs is installed already)"
else
    mkdir -p "$tmp/bin" "$tmp/mnt.helper"
    cp "$bin/snapfs" "$bin/snapfsd" "$here/mount.snapfs" "$tmp/bin/"
    chmod 755 "$tmp/bin/mount.snapfs"
    helper_link=/sbin/mount.fuse.snapfs
    ln -s "$tmp/bin/mount.snapfs" "$helper_link"
    m="$tmp/mnt.helper"
    if mount -t fuse.snapfs snapfs "$m" -o "noauto,user,_netdev,nosuid,nodev,ro,config=$here/config.toml.example"; then
        if [ -d "$m/cloud/local" ] && [ -f "$m/README" ]; then
            pass "mount -t fuse.snapfs: README and cloud/local"
        else
            fail "mount -t fuse.snapfs: mounted, but no README or cloud/local"
        fi
        if touch "$m/cloud/local/uploads/x" 2>/dev/null; then
            fail "mount -o ro: uploads/ is writable"
        else
            pass "mount -o ro: uploads/ is read-only"
        fi
        pid=$(sed -n 's/.*"pid": *\([0-9]*\).*/\1/p' "$XDG_RUNTIME_DIR"/snapfs/*.json 2>/dev/null | head -n 1)
        umount "$m" || fail "umount $m"
        i=0
        while [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && [ $i -lt 50 ]; do
            sleep 0.1
            i=$((i + 1))
        done
        if [ -z "$pid" ]; then
            fail "mount -t fuse.snapfs: no mount record in $XDG_RUNTIME_DIR/snapfs"
        elif kill -0 "$pid" 2>/dev/null && ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null; then
            fail "umount: snapfsd (pid $pid) still running"
        else
            pass "umount: unmounted and snapfsd stopped"
        fi
    else
        fail "mount -t fuse.snapfs failed"
    fi
    if mount -t fuse.snapfs snapfs "$m" -o bogus 2>/dev/null; then
        fail "mount -o bogus was accepted"
        umount "$m"
    else
        pass "mount -o bogus is refused"
    fi
fi

[ $failed -eq 0 ] && echo "all checks passed"
exit $failed
