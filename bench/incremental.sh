#!/usr/bin/env bash
# Incremental-storage benchmark: stored bytes and times of snapfs snapshots on the local
# (file://) remote, measured in one run side by side with restic on the same machine.
#
#   tree    ~1 GiB / ~20,000 real files copied from /usr/lib, /usr/share and the cargo registry
#           (bench/tree_workload.py, deterministic). 1st snapshot: stored bytes vs tar | zstd -3
#           and vs restic, and its wall time (page cache dropped) vs tar | zstd -T0 -3 writing
#           to the same disk (page cache dropped). Then ~1 % changed (128 KiB rewritten in each of the 8 largest files,
#           50 new 20 KB files): added stored bytes and wall time of the 2nd snapshot vs restic.
#           Then a 3rd snapshot with nothing changed: wall time.
#   sqlite  a ~150 MiB database (bench/sqlite_workload.py), alone in its folder, snapshotted
#           before and after 1 % of its rows are updated and 1 % inserted: added stored bytes
#           vs restic, the fraction of 4 KiB pages that changed, and zstd -3 of the file.
#   reads   cold (fresh daemon, empty snapfs cache, page cache dropped once the mount is up)
#           sequential read (dd bs=1M) of the tree's largest file and 300 random 4 KiB preads of
#           its 2nd largest, from the 1st tree snapshot: snapfs vs a baseline snapfs (old storage
#           format, BASELINE_BIN) and vs `restic mount` (a fresh restic process per read);
#           each the best of READ_RUNS (5) reads, the sides taking turns.
#
# Stored bytes are `du -sb` of the remote's directory (snapfs) and of the repository (restic,
# format 2, compression auto, cache inside the work dir). Snapshot figures are measured once:
# their times vary from run to run, more so while other work shares the machine.
#
# Run as root (drops page caches; needs restic, zstd, FUSE):
#   bash bench/incremental.sh
#   BIN=dir/with/snapfs+snapfsd BASELINE_BIN=dir/of/old/format bash bench/incremental.sh
#   TREE_MB=100 DB_ROWS=100000 bash bench/incremental.sh          # a quick run
# Without BIN, the current checkout is built (cargo build --release); without BASELINE_BIN the
# baseline read rows are skipped. TREE_FILES (default 20,000 per GiB) and TREE_SOURCES
# (space-separated folders) change the tree.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
BENCH=$PWD/bench
# shellcheck source=bench/lib.sh
. "$BENCH/lib.sh"
DB_ROWS=${DB_ROWS:-1000000}
READS=300
READ_RUNS=${READ_RUNS:-5}
READ_SEED=7

require_root "the cold reads drop the page cache"
require_tools restic zstd tar python3 fusermount3 mountpoint
# The interpreter itself: a version-manager shim may not work once HOME is changed below.
PY=$(python3 -c 'import sys; print(sys.executable)')
BIN=$(release_bin)
BASELINE_BIN=${BASELINE_BIN:+$(realpath "$BASELINE_BIN")}
for dir in "$BIN" ${BASELINE_BIN:+"$BASELINE_BIN"}; do
  check_bin "$dir"
done

W=$(mktemp -d /var/tmp/snapfs-incremental.XXXXXX)
unset XDG_CONFIG_HOME XDG_DATA_HOME XDG_CACHE_HOME XDG_STATE_HOME
export HOME=$W/home RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$W/restic/cache
mkdir -p "$HOME" "$W/tree" "$W/db" "$W/restic/mnt"
RESTIC_MOUNT_PID=

# Each snapfs side (new, base) has its own HOME, runtime dir and mount point, so the two never
# share a remote, a cache or a daemon.
side_bin() { if [ "$1" = new ]; then echo "$BIN"; else echo "$BASELINE_BIN"; fi; }
sf() {
  local side=$1; shift
  HOME=$W/$side/home XDG_RUNTIME_DIR=$W/$side/run "$(side_bin "$side")/snapfs" "$@"
}
mnt() { echo "$W/$1/mnt"; }
remote() { echo "$W/$1/home/.local/share/snapfs/local"; }
mount_sf() {
  mkdir -p "$W/$1/home" "$(mnt "$1")"
  mkdir -p -m 700 "$W/$1/run"
  sf "$1" mount "$(mnt "$1")" >/dev/null
}
unmount_sf() { sf "$1" unmount "$(mnt "$1")" >/dev/null; }
# snap NAME SRC: a snapshot by the snapfs under test, its wall time in snap_secs; then the same
# by the baseline (untimed), so both remotes hold the same snapshots when the reads compare them.
snap() {
  local t; t=$(now)
  sf new snapshot "$(mnt new)/cloud/local" "$2" --name "$1" >/dev/null
  snap_secs=$(since "$t")
  if [ -n "$BASELINE_BIN" ]; then
    sf base snapshot "$(mnt base)/cloud/local" "$2" --name "$1" >/dev/null
  fi
}

restic_unmount() {
  [ -n "$RESTIC_MOUNT_PID" ] || return 0
  fusermount3 -u "$W/restic/mnt" 2>/dev/null || umount -l "$W/restic/mnt" 2>/dev/null || true
  kill "$RESTIC_MOUNT_PID" 2>/dev/null || true
  wait "$RESTIC_MOUNT_PID" 2>/dev/null || true
  RESTIC_MOUNT_PID=
}

cleanup() {
  set +e
  restic_unmount
  local side still=
  for side in new base; do
    mountpoint -q "$W/$side/mnt" 2>/dev/null || continue
    sf "$side" unmount "$W/$side/mnt" >/dev/null 2>&1 || umount -l "$W/$side/mnt" 2>/dev/null
    mountpoint -q "$W/$side/mnt" 2>/dev/null && still=$W/$side/mnt
  done
  # Never remove through a mount that is still there.
  if [ -n "$still" ] || mountpoint -q "$W/restic/mnt" 2>/dev/null; then
    echo "left $W in place: a mount in it is still active" >&2
  else
    rm -rf "$W"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }
stored() { if [ -d "$1" ]; then du -sb "$1" | cut -f1; else echo 0; fi; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
log() { echo "# $*" >&2; }

# Figures, formatted.
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
sec() { awk -v s="$1" 'BEGIN { printf "%.2f s", s }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "-"; else printf "%.2f", a / b }'; }
# met VALUE GOAL: "met" when VALUE <= GOAL
met() { awk -v v="$1" -v g="$2" 'BEGIN { print (v != "-" && v + 0 <= g + 0) ? "met" : "not met" }'; }

ROWS=()
row() { ROWS+=("$(printf '%-44s %14s %16s %7s %8s  %s' "$@")"); }
section() { ROWS+=("" "$1"); }

# restic: one local repository per data set, in the work dir.
restic_init() { restic init -q --repository-version 2 -r "$W/restic/$1"; }
# restic_backup REPO DIR: backs DIR up as "." so the snapshot's paths are DIR's own; prints the
# snapshot id.
restic_backup() {
  (cd "$2" && restic backup -r "$W/restic/$1" --host bench --json . \
    | "$PY" -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("message_type") == "summary":
        print(m["snapshot_id"])')
}
# restic_mount REPO SNAPSHOT-ID: a fresh `restic mount`, returns once the snapshot is visible.
restic_mount() {
  restic mount -r "$W/restic/$1" "$W/restic/mnt" >"$W/restic/mount.log" 2>&1 &
  RESTIC_MOUNT_PID=$!
  local _
  for _ in $(seq 300); do
    [ -d "$W/restic/mnt/ids/$2" ] && return 0
    kill -0 "$RESTIC_MOUNT_PID" 2>/dev/null || break
    sleep 0.1
  done
  cat "$W/restic/mount.log" >&2
  echo "restic mount did not come up" >&2
  return 1
}

echo "# $(date -u +%FT%TZ) $(uname -r), $(nproc) cores, $(restic version | cut -d' ' -f1-2)"
echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (times are only comparable on an idle machine)"
echo "# snapfs $BIN; baseline ${BASELINE_BIN:-(none)}; TREE_MB=$TREE_MB TREE_FILES=$TREE_FILES DB_ROWS=$DB_ROWS"

# ---- tree ---------------------------------------------------------------------------------
log "copying the tree ($TREE_MB MiB, ~$TREE_FILES files from $TREE_SOURCES)"
# shellcheck disable=SC2086 # TREE_SOURCES is a list
built=$("$PY" "$BENCH/tree_workload.py" build "$W/tree" "$TREE_MB" "$TREE_FILES" $TREE_SOURCES)
read -r tree_files tree_bytes <<<"$built"
largest=$("$PY" "$BENCH/tree_workload.py" largest "$W/tree" 2)
mapfile -t big <<<"$largest"
seq_file=${big[0]#"$W/tree/"} rand_file=${big[1]#"$W/tree/"}
echo "# tree: $tree_files files, $tree_bytes bytes; sequential read of $seq_file, random of $rand_file"
tar_zstd=$(tar -C "$W/tree" -cf - . | zstd -3 -q -c | wc -c)
# The peer of a first snapshot's time: the tree read cold, compressed on every core and written
# to the same disk, on the disk when it ends (`sync FILE`), as snapfs's local remote and restic's
# repository are.
drop
t=$(now); tar -C "$W/tree" -cf - . | zstd -3 -T0 -q -o "$W/tree.tar.zst"; sync "$W/tree.tar.zst"
tar_zstd_secs=$(since "$t")
rm -f "$W/tree.tar.zst"

log "tree: snapshot 1"
mount_sf new
if [ -n "$BASELINE_BIN" ]; then mount_sf base; fi
s0=$(stored "$(remote new)")
drop
snap tree-1 "$W/tree"
s_time1=$snap_secs
s1=$(stored "$(remote new)")
restic_init tree
r0=$(stored "$W/restic/tree")
restic_tree_1=$(restic_backup tree "$W/tree")
restic_tree_1=${restic_tree_1:0:8}  # `restic mount` names snapshots by their short id
r1=$(stored "$W/restic/tree")

log "tree: change ~1 %, snapshot 2"
"$PY" "$BENCH/tree_workload.py" change "$W/tree" >/dev/null
snap tree-2 "$W/tree"
s_time2=$snap_secs s2=$(stored "$(remote new)")
t=$(now); restic_backup tree "$W/tree" >/dev/null
r_time2=$(since "$t"); r2=$(stored "$W/restic/tree")

log "tree: snapshot 3, nothing changed"
snap tree-3 "$W/tree"
s_time3=$snap_secs
t=$(now); restic_backup tree "$W/tree" >/dev/null
r_time3=$(since "$t")

section "tree: $tree_files files, $(mib "$tree_bytes"); tar | zstd -3 = $(mib "$tar_zstd")"
x=$(ratio $((s1 - s0)) "$tar_zstd")
row "1st snapshot stored / tar|zstd-3" "$(mib $((s1 - s0)))" "$(mib "$tar_zstd")" "$x" "<= 1.00" \
  "$(met "$x" 1.0)"
row "  restic's 1st snapshot / tar|zstd-3" "-" "$(mib $((r1 - r0)))" \
  "$(ratio $((r1 - r0)) "$tar_zstd")" "-" "ref"
x=$(ratio "$s_time1" "$tar_zstd_secs")
row "1st snapshot wall time / tar|zstd -T0 -3" "$(sec "$s_time1")" "$(sec "$tar_zstd_secs")" "$x" \
  "<= 1.25" "$(met "$x" 1.25)"
x=$(ratio $((s2 - s1)) $((r2 - r1)))
row "2nd snapshot (1 % changed) added / restic" "$(mib $((s2 - s1)))" "$(mib $((r2 - r1)))" "$x" \
  "<= 1.00" "$(met "$x" 1.0)"
x=$(ratio "$s_time2" "$r_time2")
row "2nd snapshot wall time / restic" "$(sec "$s_time2")" "$(sec "$r_time2")" "$x" "<= 1.00" \
  "$(met "$x" 1.0)"
row "3rd snapshot (unchanged) wall time" "$(sec "$s_time3")" "$(sec "$r_time3")" \
  "$(ratio "$s_time3" "$r_time3")" "<= 2 s" "$(met "$s_time3" 2)"

# ---- sqlite -------------------------------------------------------------------------------
log "sqlite: building the database ($DB_ROWS rows)"
db=$W/db/orders.sqlite
"$PY" "$BENCH/sqlite_workload.py" create "$db" "$DB_ROWS"
cp "$db" "$W/orders-before.sqlite"
log "sqlite: snapshot 1"
d0=$(stored "$(remote new)")
snap db-1 "$W/db"
d1=$(stored "$(remote new)")
restic_init db
e0=$(stored "$W/restic/db")
restic_backup db "$W/db" >/dev/null
e1=$(stored "$W/restic/db")
log "sqlite: update 1 %, insert 1 %, snapshot 2"
"$PY" "$BENCH/sqlite_workload.py" update "$db"
snap db-2 "$W/db"
d2=$(stored "$(remote new)")
restic_backup db "$W/db" >/dev/null
e2=$(stored "$W/restic/db")
pages=$("$PY" "$BENCH/sqlite_workload.py" pages "$W/orders-before.sqlite" "$db")
read -r pages_changed pages_total pages_frac <<<"$pages"
db_bytes=$(stat -c %s "$db")
db_zstd=$(zstd -3 -q -c "$db" | wc -c)

section "sqlite: $DB_ROWS rows + 1 % updated + 1 % inserted, file $(mib "$db_bytes")"
row "1st snapshot stored / restic" "$(mib $((d1 - d0)))" "$(mib $((e1 - e0)))" \
  "$(ratio $((d1 - d0)) $((e1 - e0)))" "-" "ref"
x=$(ratio $((d2 - d1)) $((e2 - e1)))
row "2nd snapshot added / restic" "$(mib $((d2 - d1)))" "$(mib $((e2 - e1)))" "$x" "<= 0.40" \
  "$(met "$x" 0.4)"
row "  4 KiB pages changed / pages (of file)" "-" "$pages_changed/$pages_total" "$pages_frac" \
  "-" "ref"
row "  zstd -3 of the file / file" "-" "$(mib "$db_zstd")" "$(ratio "$db_zstd" "$db_bytes")" "-" \
  "ref"

# ---- reads --------------------------------------------------------------------------------
seq_mib=$(mib "$(stat -c %s "$W/tree/$seq_file")")
rand_mib=$(mib "$(stat -c %s "$W/tree/$rand_file")")
# cold_read DIR seq|rand: sets secs to the seconds of one read of the snapshot at DIR.
cold_read() {
  drop
  if [ "$2" = seq ]; then
    local t; t=$(now)
    dd if="$1/$seq_file" of=/dev/null bs=1M status=none
    secs=$(since "$t")
  else
    secs=$("$PY" "$BENCH/tree_workload.py" pread "$1/$rand_file" "$READS" "$READ_SEED")
  fi
}
# the least of the arguments: other load on the machine only ever adds time
least() { printf '%s\n' "$@" | awk 'NR == 1 || $1 < m { m = $1 } END { print m }'; }
# cold_snapfs SIDE seq|rand: a fresh daemon with an empty cache reads the 1st tree snapshot.
cold_snapfs() {
  if mountpoint -q "$(mnt "$1")"; then unmount_sf "$1"; fi
  rm -rf "$W/$1/home/.cache/snapfs"
  mount_sf "$1"
  cold_read "$(mnt "$1")/cloud/local/snapshots/tree-1" "$2"
}
# cold_restic seq|rand: the same through a fresh `restic mount` of restic's 1st tree snapshot.
cold_restic() {
  restic_mount tree "$restic_tree_1"
  cold_read "$W/restic/mnt/ids/$restic_tree_1" "$1"
  restic_unmount
}
# The sides take turns, in an order that rotates every round, so that other load on the
# machine and any effect of going first fall on all of them alike.
log "reads: snapfs${BASELINE_BIN:+, baseline} and restic mount, $READ_RUNS rounds"
declare -A runs=()
order=(new ${BASELINE_BIN:+base} restic)
for _ in $(seq "$READ_RUNS"); do
  for kind in seq rand; do
    for side in "${order[@]}"; do
      if [ "$side" = restic ]; then cold_restic "$kind"; else cold_snapfs "$side" "$kind"; fi
      runs[$side.$kind]+=" $secs"
    done
  done
  order=("${order[@]:1}" "${order[0]}")
done
unmount_sf new
if [ -n "$BASELINE_BIN" ]; then unmount_sf base; fi
for key in "${!runs[@]}"; do echo "# read seconds, $key:${runs[$key]}"; done | sort
echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
# shellcheck disable=SC2086 # a list of times
best() { least ${runs[$1]}; }

section "reads, cold, best of $READ_RUNS: dd bs=1M of $seq_mib; $READS x 4 KiB preads of $rand_mib"
for kind in seq rand; do
  if [ "$kind" = seq ]; then what="sequential read"; else what="$READS random 4 KiB reads"; fi
  n=$(best new.$kind) r=$(best restic.$kind)
  if [ -n "$BASELINE_BIN" ]; then
    b=$(best base.$kind) x=$(ratio "$n" "$b")
    row "$what / baseline" "$(sec "$n")" "$(sec "$b")" "$x" "<= 1.10" "$(met "$x" 1.1)"
  else
    row "$what / baseline" "$(sec "$n")" "-" "-" "<= 1.10" "skipped: no BASELINE_BIN"
  fi
  row "$what / restic mount" "$(sec "$n")" "$(sec "$r")" "$(ratio "$n" "$r")" "-" "ref"
done

echo
printf '%-44s %14s %16s %7s %8s  %s\n' figure snapfs peer ratio goal result
printf '%s\n' "${ROWS[@]}"
