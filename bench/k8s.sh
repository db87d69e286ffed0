#!/usr/bin/env bash
# Upload benchmark against kubesim, run by hand: a folder copied into k8s/<ctx>/<ns>/uploads/
# until its VolumeSnapshot is ready, and the same folder given to `snapfs snapshot` (read in
# place), vs `kubectl cp` of the folder into a running pod of the same server (no snapshot, no
# check of what arrived). Needs kubectl and built binaries (cargo build --release -p snapfsd
# -p snapfs -p kubesim).
#
#   DATA=random     (default) SIZE_MIB (default 1 GiB) of random data in 64 files
#   DATA=realistic  a SQLite database of DB_ROWS rows (bench/sqlite_workload.py, ~150 MiB for
#                   the default 1,000,000) and a source tree of TREE_MB MiB (default 350) copied
#                   from TREE_SOURCES (bench/tree_workload.py): compressible, as real data is
#   LINK=50Mi       limits exec streams to that many bytes a second each way (kubesim
#                   --exec-bandwidth), as a link to a real cluster would; kubectl cp goes
#                   through the same limit
#   IMAGE=busybox-zstd  the image of snapfs's upload pods; kubesim gives images named with
#                   zstd the host's zstd, so the stream goes in zstd frames (default: busybox,
#                   lzop frames)
#   SIM_DISK=1      keeps kubesim's volumes and snapshots on this machine's disk; by default they
#                   are on a tmpfs, as a cluster's storage is not the disk of the machine that
#                   uploads (this machine's disk would otherwise take the writes of both sides,
#                   three times over for snapfs: staged tree, claim, snapshot copy)
#   WORKDIR=/tmp    where the source folder, the daemon's staged files and cache go (see
#                   bench/uploads.sh on an ext4 without a journal)
#   EARLY=0         uploads/ starts only once the copy settled (upload.early = false), to
#                   compare with uploads that begin while the copy runs (the default)
#   SETTLE=2s       upload.settle of the daemon: how long uploads/ waits after the copy's last
#                   write before it finishes the upload (default: snapfs's own default, 2 s)
#   ROUNDS=3        rounds of all three; each round gets its own folder in the pod and its own
#                   snapshot names, and the median of the rounds' ratios is printed last
#
# Each timed step starts after `sync`, so that the writeback of the step before does not fall
# on the next one. Run as root (the tmpfs).
set -euo pipefail
bin="${CARGO_TARGET_DIR:-$(dirname "$0")/../target}/${PROFILE:-release}"
size_mib="${SIZE_MIB:-1024}"
files=64
work=$(mktemp -d "${WORKDIR:-/tmp}/snapfs-bench-XXXXXX")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
sim="" daemon=""
cleanup() {
  status=$?
  # A failed run shows why.
  if [ "$status" != 0 ] && [ -f "$work/daemon.log" ]; then tail -n 40 "$work/daemon.log" >&2; fi
  [ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null || true
  umount -l "$work/mnt" 2>/dev/null || true
  [ -n "$sim" ] && kill "$sim" 2>/dev/null && wait "$sim" 2>/dev/null || true
  umount "$work/sim" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/mnt" "$work/home/.kube" "$work/src" "$work/sim"
storage=disk
[ -n "${SIM_DISK:-}" ] || { mount -t tmpfs -o size=16g,mode=0755 snapfs-bench "$work/sim"; storage=tmpfs; }
"$bin/kubesim" --kubeconfig "$work/home/.kube/config" --port "$port" --data-dir "$work/sim" \
  ${LINK:+--exec-bandwidth "$LINK"} >"$work/kubesim.log" 2>&1 &
sim=$!
export KUBECONFIG="$work/home/.kube/config"
until kubectl get ns >/dev/null 2>&1; do sleep 0.2; done

case "${DATA:-random}" in
  random)
    per=$((size_mib / files))
    for i in $(seq 1 $files); do head -c $((per << 20)) /dev/urandom >"$work/src/part-$i.bin"; done
    ;;
  realistic)
    bench=$(dirname "$0")
    python3 "$bench/sqlite_workload.py" create "$work/src/orders.sqlite" "${DB_ROWS:-1000000}"
    # shellcheck disable=SC2086 # TREE_SOURCES is a list
    python3 "$bench/tree_workload.py" build "$work/src/tree" "${TREE_MB:-350}" \
      $((20000 * ${TREE_MB:-350} / 1024)) ${TREE_SOURCES:-/usr/lib /usr/share $HOME/.cargo/registry/src} >/dev/null
    size_mib=$(($(du -sb "$work/src" | cut -f1) >> 20))
    ;;
  *) echo "DATA is random or realistic" >&2; exit 2 ;;
esac
echo "# $(date -u +%FT%TZ), $(nproc) cores; DATA=${DATA:-random} ($size_mib MiB, $(find "$work/src" -type f | wc -l) files; zstd -3 of its tar: $(($(tar -cf - -C "$work" src | zstd -3 -T0 -c | wc -c) >> 20)) MiB); LINK=${LINK:-none}; IMAGE=${IMAGE:-busybox}; upload.settle ${SETTLE:-2s}; kubesim's storage on $storage"

# Baseline: kubectl cp into a pod with a volume, as one would by hand.
# (kubesim speaks JSON, not protobuf, which `kubectl create namespace` would send.)
kubectl apply -f - >/dev/null <<'YAML'
apiVersion: v1
kind: Namespace
metadata: {name: bench}
YAML
kubectl apply -n bench -f - >/dev/null <<'YAML'
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: target}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 4Gi}}}
---
apiVersion: v1
kind: Pod
metadata: {name: target}
spec:
  containers:
  - {name: c, image: busybox, command: [sleep, "3600"], volumeMounts: [{name: d, mountPath: /data}]}
  volumes: [{name: d, persistentVolumeClaim: {claimName: target}}]
YAML
until [ "$(kubectl get pod -n bench target -o jsonpath='{.status.phase}')" = Running ]; do sleep 0.2; done

cat >"$work/config.toml" <<CONF
[upload]
settle = "${SETTLE:-2s}"
${EARLY:+early = $([ "$EARLY" = 0 ] && echo false || echo true)}
[cache]
dir = "$work/cache"
[[kubernetes]]
context = "kubesim"
namespaces = ["bench"]
${IMAGE:+image = \"$IMAGE\"}
CONF
HOME="$work/home" XDG_RUNTIME_DIR="$work/run" XDG_STATE_HOME="$work/state" \
  "$bin/snapfsd" --mountpoint "$work/mnt" --config "$work/config.toml" >"$work/daemon.log" 2>&1 &
daemon=$!
until [ -d "$work/mnt/k8s/kubesim/bench/uploads" ]; do sleep 0.2; done
snapfs() { HOME="$work/home" XDG_RUNTIME_DIR="$work/run" "$bin/snapfs" "$@"; }

now() { date +%s.%N; }
rounds="${ROUNDS:-3}"
: >"$work/times"
for r in $(seq 1 "$rounds"); do
  # Baseline: kubectl cp into a pod with a volume, as one would by hand.
  sync; t0=$(now)
  kubectl cp "$work/src" "bench/target:/data/copy-$r" >/dev/null
  t1=$(now)
  arrived=$(kubectl exec -n bench target -- du -sm "/data/copy-$r" | cut -f1)
  kubectl exec -n bench target -- rm -rf "/data/copy-$r"
  # snapfs: cp into uploads/, then wait until the VolumeSnapshot is ready and cleaned up after.
  sync; t2=$(now)
  cp -r "$work/src" "$work/mnt/k8s/kubesim/bench/uploads/up-$r"
  t3=$(now)
  snapfs wait "$work/mnt/k8s/kubesim/bench/uploads/up-$r" >/dev/null
  t4=$(now)
  ready=$(kubectl get volumesnapshot -n bench "up-$r" -o jsonpath='{.status.readyToUse}')
  # snapfs snapshot: the folder is read in place, not staged through the mount first.
  sync; t5=$(now)
  snapfs snapshot "$work/mnt/k8s/kubesim/bench" "$work/src" --name "snap-$r" >/dev/null
  t6=$(now)
  echo "$t0 $t1 $t2 $t3 $t4 $t5 $t6 $arrived $ready" >>"$work/times"
done

[ -n "${SHOW_LOG:-}" ] && cat "$work/daemon.log" "$work/kubesim.log" >&2
python3 - "$size_mib" "$work/times" "$work/daemon.log" <<'PY'
import re, statistics, sys
mib = int(sys.argv[1])
rounds = [line.split() for line in open(sys.argv[2])]
# The daemon's own account of each upload: how long the stream and its check took, and how
# many segments of the stream were compressed at each effort (fastest first; segments that did
# not compress went stored and are not counted).
log = open(sys.argv[3], errors="replace").read()
stream, efforts = {}, {}
for line in log.splitlines():
    name = re.search(r"snapshot=\"?([^\s\"]+)", line)
    secs = re.search(r"seconds=([0-9.]+)", line)
    segments = re.search(r"segments_by_effort=\[([0-9, ]*)\]", line)
    if "data arrived and checked" in line and name and secs:
        stream[name.group(1)] = float(secs.group(1))
    if name and segments:
        efforts[name.group(1)] = segments.group(1)
up_ratios, snap_ratios = [], []
for r, row in enumerate(rounds, 1):
    t0, t1, t2, t3, t4, t5, t6 = map(float, row[:7])
    arrived, ready = row[7], row[8]
    kc, cp, total, direct = t1 - t0, t3 - t2, t4 - t2, t6 - t5
    up_ratios.append(kc / total)
    snap_ratios.append(kc / direct)
    print(f"round {r}")
    print(f"  kubectl cp {mib} MiB into a pod:        {kc:7.2f} s  ({mib / kc:7.1f} MiB/s; {arrived} MiB arrived)")
    print(f"  snapfs uploads/ to a ready snapshot:  {total:7.2f} s  ({mib / total:7.1f} MiB/s; cp into the mount {cp:.2f} s; ready={ready})")
    print(f"  snapfs snapshot (read in place):      {direct:7.2f} s  ({mib / direct:7.1f} MiB/s)")
    for name in (f"up-{r}", f"snap-{r}"):
        if name in stream:
            print(f"    {name}: stream sent and checked in {stream[name]:.2f} s"
                  f" (segments compressed at each effort, fastest first: {efforts.get(name, '?')})")
    print(f"  ratio (kubectl cp time / snapfs time): uploads/ {kc / total:.2f}x, snapshot {kc / direct:.2f}x")
print(f"median of {len(rounds)} rounds (kubectl cp time / snapfs time): "
      f"uploads/ {statistics.median(up_ratios):.2f}x, snapshot {statistics.median(snap_ratios):.2f}x")
PY
