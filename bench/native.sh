#!/usr/bin/env bash
# snapfs against the kernel's own file system, measured side by side in one run on this machine.
# Each row gives both times and their ratio, snapfs time / ext4 time (1.00 = as fast as ext4;
# for reads the speed ratio, ext4 time / snapfs time, is printed as well):
#   read of a 1 GiB snapshot file from the disk cache, fresh daemon, page cache dropped,
#     vs the same file on ext4 with the page cache dropped           (goal: speed >= 0.9)
#   re-read of it from the page cache vs ext4 from the page cache
#   ls -l of a 10,000-file snapshot folder, warm                      (goal: <= 1.5)
#   ls -l of it first after a mount, page cache dropped, vs ext4 cold (goal: <= 3)
#   sqlite3 queries on a snapshot database in the cache vs a copy on ext4 (goal: <= 1.2)
# Builds nothing: it takes the release binaries from BIN (default target/release, or
# $CARGO_TARGET_DIR/release). PASSTHROUGH=off runs the daemon with --no-passthrough.
# Run as root (it drops the page cache): bash bench/native.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release}
SIZE_MIB=${SIZE_MIB:-1024}
FILES=${FILES:-10000}
ROWS=${ROWS:-200000}
RUNS=${RUNS:-3}
for b in snapfs snapfsd; do
  [ -x "$BIN/$b" ] || { echo "no $BIN/$b: build with cargo build --release -p snapfsd -p snapfs" >&2; exit 2; }
done
BIN=$(cd "$BIN" && pwd)
case ${PASSTHROUGH:-on} in
  on) unset SNAPFS_NO_PASSTHROUGH ;;
  off) export SNAPFS_NO_PASSTHROUGH=1 ;;
  *) echo "PASSTHROUGH is on or off" >&2; exit 2 ;;
esac

W=$(mktemp -d /var/tmp/snapfs-native.XXXXXX)
MNT=$W/mnt
export HOME=$W/home XDG_RUNTIME_DIR=$W/run
unset XDG_CONFIG_HOME XDG_DATA_HOME XDG_CACHE_HOME XDG_STATE_HOME
mkdir -p "$MNT" "$HOME" "$W/src/small"
T=$MNT/cloud/local
CACHE=$HOME/.cache/snapfs/blocks

cleanup() {
  "$BIN/snapfs" unmount "$MNT" >/dev/null 2>&1 || umount -l "$MNT" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT

drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
mount_snapfs() { "$BIN/snapfs" mount "$MNT" >/dev/null; }
unmount_snapfs() { "$BIN/snapfs" unmount "$MNT" >/dev/null; }
# milliseconds a command takes, its output thrown away
ms() { local a b; a=$(date +%s%N); "$@" >/dev/null; b=$(date +%s%N); echo $(( (b - a) / 1000000 )); }
median() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }
row() { # name, snapfs ms, ext4 ms, goal
  printf '%-34s snapfs %6s ms   ext4 %6s ms   snapfs/ext4 %5s   %s\n' "$1" "$2" "$3" \
    "$(echo "scale=2; $2 / ($3 + 0.001)" | bc -l)" "$4"
}
# Waits until the disk cache holds N sealed whole files (passthrough on), at most a minute.
wait_whole() {
  [ "${PASSTHROUGH:-on}" = on ] || return 0
  for _ in $(seq 600); do
    [ "$(find "$CACHE/files" -name '*.seal' 2>/dev/null | wc -l)" -ge "$1" ] && return 0
    sleep 0.1
  done
  echo "fewer than $1 whole files in the disk cache" >&2
}

echo "# $(date -u +%FT%TZ) $(uname -r), $(nproc) cores, passthrough ${PASSTHROUGH:-on}"
head -c $((SIZE_MIB << 20)) /dev/urandom > "$W/src/big.bin"
for i in $(seq 1 "$FILES"); do head -c 4096 /dev/urandom > "$W/src/small/f$i"; done
python3 - "$W/src/app.db" "$ROWS" <<'EOF'
import random, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, k INTEGER, v TEXT)")
db.execute("CREATE INDEX t_k ON t (k)")
r = random.Random(1)
db.executemany("INSERT INTO t VALUES (?, ?, ?)",
               ((i, r.randrange(1000), "%030x" % r.getrandbits(120) * 4) for i in range(int(sys.argv[2]))))
db.commit()
EOF

mount_snapfs
for name in big.bin small app.db; do
  cp -r "$W/src/$name" "$T/uploads/$name"
  "$BIN/snapfs" wait "$T/uploads/$name" >/dev/null
done
S=$T/snapshots

# Fill the disk cache with the big file (kept whole too, with passthrough on).
cat "$S/big.bin" >/dev/null
wait_whole 1
cold=() ext4=()
for _ in $(seq "$RUNS"); do
  unmount_snapfs; drop; mount_snapfs
  cold+=("$(ms cat "$S/big.bin")")
  drop
  ext4+=("$(ms cat "$W/src/big.bin")")
done
c=$(median "${cold[@]}") e=$(median "${ext4[@]}")
row "1 GiB read, disk cache, cold" "$c" "$e" "speed $(echo "scale=2; $e / $c" | bc -l) (goal >= 0.9)"

warm=() ext4=()
cat "$S/big.bin" >/dev/null; cat "$W/src/big.bin" >/dev/null
for _ in $(seq "$RUNS"); do
  warm+=("$(ms cat "$S/big.bin")")
  ext4+=("$(ms cat "$W/src/big.bin")")
done
c=$(median "${warm[@]}") e=$(median "${ext4[@]}")
row "1 GiB re-read, page cache" "$c" "$e" "speed $(echo "scale=2; $e / $c" | bc -l)"

first=() ext4=()
for _ in $(seq "$RUNS"); do
  unmount_snapfs; drop; mount_snapfs
  first+=("$(ms ls -l "$S/small")")
  drop
  ext4+=("$(ms ls -l "$W/src/small")")
done
row "ls -l ${FILES} files, first after mount" "$(median "${first[@]}")" "$(median "${ext4[@]}")" "(goal <= 3)"

warm=() ext4=()
ls -l "$S/small" >/dev/null; ls -l "$W/src/small" >/dev/null
for _ in $(seq "$RUNS"); do
  warm+=("$(ms ls -l "$S/small")")
  ext4+=("$(ms ls -l "$W/src/small")")
done
row "ls -l ${FILES} files, warm" "$(median "${warm[@]}")" "$(median "${ext4[@]}")" "(goal <= 1.5)"

# SQLite: each query a new sqlite3 process, as scripts do; the database cached on disk first
# (and opened often enough to be kept whole, with passthrough on), then a fresh daemon.
queries() {
  local db=$1
  sqlite3 "file:$db?immutable=1" "SELECT count(*), sum(length(v)) FROM t;"
  for k in 7 77 777; do sqlite3 "file:$db?immutable=1" "SELECT count(*) FROM t WHERE k = $k;"; done
  for id in 1 99999 123456; do sqlite3 "file:$db?immutable=1" "SELECT v FROM t WHERE id = $id;"; done
}
queries "$S/app.db" >/dev/null
wait_whole 2
unmount_snapfs; drop; mount_snapfs
queries "$S/app.db" >/dev/null; queries "$W/src/app.db" >/dev/null
snap=() ext4=()
# Short and noisy: three times the runs.
for _ in $(seq $((RUNS * 3))); do
  snap+=("$(ms queries "$S/app.db")")
  ext4+=("$(ms queries "$W/src/app.db")")
done
row "sqlite3, 7 queries, cached" "$(median "${snap[@]}")" "$(median "${ext4[@]}")" "(goal <= 1.2)"
