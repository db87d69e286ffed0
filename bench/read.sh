#!/usr/bin/env bash
# Read benchmarks of DESIGN §4 / the foundation targets, measured in one run against baselines
# taken on the same machine:
#   cold read of a 1 GiB snapshot file        (vs reading the raw file from the local store)
#   re-read from the page cache (keep_cache)  (vs cat of an ext4 file already in page cache)
#   read from the disk cache, page cache dropped (vs cat of the cache's own block files)
#   the same read through `rclone mount` of a local folder (needs the rclone package)
#   ls -l of a 10,000-file snapshot, cold and warm; cp -r of 10,000 x 4 KiB files until ready
# Run as root (drops page caches): bash bench/read.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${SIZE_MIB:-1024}
FILES=${FILES:-10000}

cargo build --release -p snapfsd -p snapfs >/dev/null
BIN=${CARGO_TARGET_DIR:-target}/release
W=$(mktemp -d /var/tmp/snapfs-bench.XXXXXX)
MNT=$W/mnt RMNT=$W/rclone-mnt
export HOME=$W/home XDG_RUNTIME_DIR=$W/run
mkdir -p "$MNT" "$RMNT" "$HOME" "$W/src"
T=$MNT/cloud/local

cleanup() {
  "$BIN/snapfs" unmount "$MNT" >/dev/null 2>&1 || umount -l "$MNT" 2>/dev/null || true
  fusermount3 -u "$RMNT" 2>/dev/null || umount -l "$RMNT" 2>/dev/null || true
  # Stopped by the pid it was started with.
  [ -z "${RCLONE_PID:-}" ] || kill "$RCLONE_PID" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT

now() { date +%s.%N; }
# seconds taken by a command
timed() { local a b; a=$(now); "$@" >/dev/null; b=$(now); echo "$b - $a" | bc -l; }
rate() { echo "scale=2; $SIZE_MIB / 1024 / $1" | bc -l; }   # GiB/s
ratio() { echo "scale=2; $1 / $2" | bc -l; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
mount_snapfs() { "$BIN/snapfs" mount "$MNT" >/dev/null; }
unmount_snapfs() { "$BIN/snapfs" unmount "$MNT" >/dev/null; }

echo "# $(date -u +%FT%TZ) $(uname -r), $(nproc) cores; file ${SIZE_MIB} MiB of random bytes"
head -c $((SIZE_MIB << 20)) /dev/urandom > "$W/src/big.bin"

mount_snapfs
cp "$W/src/big.bin" "$T/uploads/big.bin"
"$BIN/snapfs" wait "$T/uploads/big.bin" >/dev/null
STORE=$HOME/.local/share/snapfs/local
CACHE=$HOME/.cache/snapfs/blocks

# Cold: empty block cache, fresh daemon, no page cache.
unmount_snapfs; rm -rf "$CACHE"; drop; mount_snapfs
cold=$(timed dd if="$T/snapshots/big.bin" of=/dev/null bs=1M)
drop
raw=$(timed cat "$STORE"/snapfs/packs/*/*)
echo "cold read            $(rate "$cold") GiB/s   raw pack files from the store $(rate "$raw") GiB/s   ratio $(ratio "$raw" "$cold")"

# Page cache: second read of the same open-able file (keep_cache) vs an ext4 file in page cache.
cat "$T/snapshots/big.bin" >/dev/null
warm=$(timed cat "$T/snapshots/big.bin")
cat "$W/src/big.bin" >/dev/null
ext4=$(timed cat "$W/src/big.bin")
echo "re-read (page cache) $(rate "$warm") GiB/s   ext4 in page cache $(rate "$ext4") GiB/s   ratio $(ratio "$ext4" "$warm") (target >= 0.9)"

# Disk cache: fresh daemon (empty memory cache), page cache dropped.
unmount_snapfs; drop; mount_snapfs
disk=$(timed cat "$T/snapshots/big.bin")
drop
direct=$(timed sh -c "find $CACHE -type f -exec cat {} + > /dev/null")
echo "disk-cache read      $(rate "$disk") GiB/s   cache files read directly $(rate "$direct") GiB/s   ratio $(ratio "$direct" "$disk") (target >= 0.8)"

if command -v rclone >/dev/null; then
  rclone mount "$W/src" "$RMNT" --read-only >/dev/null 2>&1 &
  RCLONE_PID=$!
  for _ in $(seq 50); do [ -e "$RMNT/big.bin" ] && break; sleep 0.1; done
  if [ -e "$RMNT/big.bin" ]; then
    unmount_snapfs; drop; mount_snapfs
    disk2=$(timed cat "$T/snapshots/big.bin")
    drop
    rcl=$(timed cat "$RMNT/big.bin")
    echo "rclone mount read    $(rate "$rcl") GiB/s   snapfs disk-cache read $(rate "$disk2") GiB/s   snapfs/rclone $(ratio "$rcl" "$disk2") (target >= 5)"
  else
    echo "rclone mount read    rclone could not mount here (skipped)"
  fi
else
  echo "rclone mount read    rclone not installed (apt-get install rclone) (skipped)"
fi

# Many small files: cp -r until ready, then ls -l cold (fresh daemon) and warm.
mkdir "$W/small"
for i in $(seq 1 "$FILES"); do head -c 4096 /dev/urandom > "$W/small/f$i"; done
a=$(now)
cp -r "$W/small" "$T/uploads/small"
"$BIN/snapfs" wait "$T/uploads/small" >/dev/null
b=$(now)
echo "cp -r ${FILES} x 4 KiB until ready  $(echo "$b - $a" | bc -l | cut -c1-5) s (target <= 20 s)"
unmount_snapfs; drop; mount_snapfs
lscold=$(timed ls -l "$T/snapshots/small")
lswarm=$(timed ls -l "$T/snapshots/small")
echo "ls -l ${FILES} files  cold $(echo "$lscold * 1000" | bc -l | cut -d. -f1) ms (target <= 300)   warm $(echo "$lswarm * 1000" | bc -l | cut -d. -f1) ms (target <= 50)"
