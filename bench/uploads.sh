#!/usr/bin/env bash
# uploads/ against `snapfs snapshot`, measured side by side in one run on this machine:
#   `cp -r TREE MOUNT/cloud/local/uploads/NAME` followed by `snapfs wait`, against
#   `snapfs snapshot MOUNT/cloud/local TREE` of the same tree                (goal: <= 1.3)
# and, for scale, `cp -r` of the tree to the same disk; the cp alone (before the wait); the same
# cp + wait with `upload.early = false` (the run reads every staged file after the copy); and
# with BASELINE_BIN, the same cp + wait by that build too (an earlier snapfs), and its ratio to
# this one's. Each side has a remote, cache and daemon of its own, so none finds another's
# chunks; the page cache is dropped before each. The tree is bench/tree_workload.py's
# (~1 GiB, ~20,000 real files from this machine).
#
# Run as root (drops the page cache): bash bench/uploads.sh
#   BIN=dir/with/snapfs+snapfsd BASELINE_BIN=dir/of/older TREE_MB=256 RUNS=3 bash bench/uploads.sh
# Without BIN, the current checkout is built (cargo build --release). UPLOAD_SETTLE (default
# 2 s, snapfs's default) is the settle time of the uploads side. WORKDIR (default /var/tmp)
# is where the tree, the remotes, caches and staged files go: all of it on one file system.
#
# An ext4 without a journal (`/proc/fs/ext4/DEV/options` says `nojournal_checksum`, and
# `/sys/fs/ext4/DEV/journal_task` is `<none>`) makes every new inode skip over those freed in
# the last minutes (`recently_deleted` in a profile). Each side's copy then pays for the trees
# the sides before it removed: measure on a file system with a journal, such as a loop-mounted
# `mkfs.ext4` image, given as WORKDIR.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
BENCH=$PWD/bench
# shellcheck source=bench/lib.sh
. "$BENCH/lib.sh"
RUNS=${RUNS:-1}
UPLOAD_SETTLE=${UPLOAD_SETTLE:-2s}

require_root "the runs drop the page cache"
require_tools python3 fusermount3 mountpoint
PY=$(python3 -c 'import sys; print(sys.executable)')
BIN=$(release_bin)
check_bin "$BIN"
BASELINE_BIN=${BASELINE_BIN:+$(realpath "$BASELINE_BIN")}
if [ -n "$BASELINE_BIN" ]; then check_bin "$BASELINE_BIN"; fi

W=$(mktemp -d "${WORKDIR:-/var/tmp}/snapfs-uploads.XXXXXX")
unset XDG_CONFIG_HOME XDG_DATA_HOME XDG_CACHE_HOME XDG_STATE_HOME
mkdir -p "$W/tree"

# Each side (cp, late, snap, base) has its own HOME, runtime dir and mount point; late stores
# nothing early, base runs the baseline build.
sf() {
  local side=$1 bin=$BIN; shift
  if [ "$side" = base ]; then bin=$BASELINE_BIN; fi
  HOME=$W/$side/home XDG_RUNTIME_DIR=$W/$side/run "$bin/snapfs" "$@"
}
mnt() { echo "$W/$1/mnt"; }
mount_sf() {
  rm -rf "$W/$1"
  mkdir -p "$W/$1/home/.config/snapfs" "$(mnt "$1")"
  mkdir -p -m 700 "$W/$1/run"
  local early=true
  if [ "$1" = late ]; then early=false; fi
  printf '[upload]\nsettle = "%s"\nearly = %s\n' "$UPLOAD_SETTLE" "$early" \
    >"$W/$1/home/.config/snapfs/config.toml"
  sf "$1" mount "$(mnt "$1")" >/dev/null
}
unmount_sf() { sf "$1" unmount "$(mnt "$1")" >/dev/null; }

cleanup() {
  set +e
  local side still=
  for side in cp late snap base; do
    mountpoint -q "$W/$side/mnt" 2>/dev/null || continue
    sf "$side" unmount "$W/$side/mnt" >/dev/null 2>&1 || umount -l "$W/$side/mnt" 2>/dev/null
    mountpoint -q "$W/$side/mnt" 2>/dev/null && still=$W/$side/mnt
  done
  if [ -n "$still" ]; then echo "left $W in place: $still is still mounted" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
log() { echo "# $*" >&2; }

echo "# $(date -u +%FT%TZ) $(uname -r), $(nproc) cores"
echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (times are only comparable on an idle machine)"
log "copying the tree ($TREE_MB MiB, ~$TREE_FILES files from $TREE_SOURCES)"
# shellcheck disable=SC2086 # TREE_SOURCES is a list
built=$("$PY" "$BENCH/tree_workload.py" build "$W/tree" "$TREE_MB" "$TREE_FILES" $TREE_SOURCES)
echo "# tree: $built (files bytes); upload settle $UPLOAD_SETTLE"

# cp_wait SIDE NAME: cp -r of the tree into uploads/NAME on a fresh mount of SIDE, then wait;
# its wall time in cp_secs, that of the cp alone in copy_secs.
cp_wait() {
  mount_sf "$1"
  drop
  local t; t=$(now)
  cp -r "$W/tree" "$(mnt "$1")/cloud/local/uploads/$2"
  copy_secs=$(since "$t")
  sf "$1" wait "$(mnt "$1")/cloud/local/uploads/$2" >/dev/null
  cp_secs=$(since "$t")
  unmount_sf "$1"
}

printf '%-5s %12s %12s %8s %12s %10s %13s %6s %14s %8s\n' run "cp+wait" snapshot ratio \
  "cp to disk" "cp alone" "no-early c+w" gain "baseline c+w" "speedup"
for run in $(seq "$RUNS"); do
  mount_sf snap
  drop
  t=$(now); sf snap snapshot "$(mnt snap)/cloud/local" "$W/tree" --name tree >/dev/null
  snap_secs=$(since "$t")
  unmount_sf snap

  base_secs=- speedup=-
  if [ -n "$BASELINE_BIN" ]; then
    cp_wait base tree
    base_secs=$cp_secs
  fi
  cp_wait late tree
  late_secs=$cp_secs
  cp_wait cp tree
  alone_secs=$copy_secs
  if [ -n "$BASELINE_BIN" ]; then
    speedup=$(awk -v a="$base_secs" -v b="$cp_secs" 'BEGIN { printf "%.2f", a / b }')
  fi

  rm -rf "$W/copy"; drop
  t=$(now); cp -r "$W/tree" "$W/copy"; sync; disk_secs=$(since "$t")
  rm -rf "$W/copy"

  printf '%-5s %11.2fs %11.2fs %8.2f %11.2fs %9.2fs %12.2fs %6.2f %14s %8s\n' "$run" \
    "$cp_secs" "$snap_secs" "$(awk -v a="$cp_secs" -v b="$snap_secs" 'BEGIN { print a / b }')" \
    "$disk_secs" "$alone_secs" "$late_secs" \
    "$(awk -v a="$late_secs" -v b="$cp_secs" 'BEGIN { print a / b }')" "$base_secs" "$speedup"
done
echo "# ratio: cp+wait / snapshot (goal <= 1.3); gain: no-early cp+wait / cp+wait;" \
  "speedup: baseline cp+wait / this cp+wait"
