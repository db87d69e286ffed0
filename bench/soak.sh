#!/usr/bin/env bash
# Soak of one mount (by hand): READERS threads reading random ranges of a snapshot and checking
# every byte against the source, while WRITERS copy folders into uploads/, wait, check and
# remove them, for SECONDS. Reports reads, uploads, mismatches, hangs and the daemon's RSS over
# time; exits non-zero on any mismatch or hang.
#   bash bench/soak.sh                       # 10 minutes, 24 readers, 4 writers
#   SECONDS_=60 bash bench/soak.sh           # a short one
# BIN=DIR uses snapfs/snapfsd from DIR instead of building them.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${SECONDS_:-600}
READERS=${READERS:-24}
WRITERS=${WRITERS:-4}

if [ -z "${BIN:-}" ]; then
  cargo build --release -p snapfsd -p snapfs >/dev/null
  BIN=${CARGO_TARGET_DIR:-target}/release
fi
BIN=$(realpath "$BIN")
W=$(mktemp -d /var/tmp/snapfs-soak.XXXXXX)
MNT=$W/mnt
export HOME=$W/home XDG_RUNTIME_DIR=$W/run
mkdir -p "$MNT" "$HOME" "$XDG_RUNTIME_DIR" "$W/src/small" "$W/work"
chmod 700 "$XDG_RUNTIME_DIR"
T=$MNT/cloud/local

cleanup() {
  "$BIN/snapfs" unmount "$MNT" >/dev/null 2>&1 || umount -l "$MNT" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT

echo "# $(date -u +%FT%TZ) $(uname -r), $(nproc) cores; ${DURATION} s, $READERS readers, $WRITERS writers"
# What the readers read: large files cut into many chunks, and 2,000 small ones.
for i in 1 2 3; do head -c $((60 << 20)) /dev/urandom > "$W/src/large-$i"; done
for i in $(seq 2000); do head -c $((RANDOM * 3 % 40000 + 1)) /dev/urandom > "$W/src/small/f$i"; done

"$BIN/snapfs" mount "$MNT" >/dev/null
cp -r "$W/src" "$T/uploads/soak"
"$BIN/snapfs" wait "$T/uploads/soak" >/dev/null
python3 bench/soak.py "$BIN/snapfs" "$T" "$W/src" "$W/work" "$DURATION" "$READERS" "$WRITERS"
