#!/usr/bin/env bash
# HiveMQ by Kubernetes coordinates, run by hand. A backup of SIZE_MIB (default 200) served by
# the HiveMQ test server behind a three-pod StatefulSet of the Kubernetes test server, read:
#   1. through a cluster configured by URL (plain TCP to the broker): the baseline;
#   2. through a cluster configured by coordinates (snapfs's own port-forward);
#   3. with curl through `kubectl port-forward` (no cache, no checks).
# Each read is cold: its own cache key, page cache dropped. Then the cost of a forward: N
# listings with curl on the daemon's forward socket, one connection each (a forward per
# request) and all on one kept-alive connection (pooled, as the daemon's client does).
# Needs root (to drop caches), kubectl, curl and release binaries:
#   cargo build --release -p snapfsd -p snapfs -p kubesim -p hivemqsim
set -euo pipefail
bin="${CARGO_TARGET_DIR:-$(dirname "$0")/../target}/${PROFILE:-release}"
size_mib="${SIZE_MIB:-200}"
n="${LISTINGS:-50}"
work=$(mktemp -d /tmp/snapfs-bench-XXXXXX)
broker="" sim="" daemon="" pf=""
cleanup() {
  for p in "$pf" "$daemon"; do [ -n "$p" ] && kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
  umount -l "$work/mnt" 2>/dev/null || true
  for p in "$sim" "$broker"; do [ -n "$p" ] && kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/mnt" "$work/home/.kube" "$work/run"
chmod 700 "$work/run"
now() { date +%s.%N; }
cold() { sync; echo 3 >/proc/sys/vm/drop_caches; }

"$bin/hivemqsim" --seed $((size_mib << 20)) >"$work/broker.out" 2>"$work/broker.log" &
broker=$!
until [ "$(wc -l <"$work/broker.out")" -ge 2 ]; do sleep 0.1; done
url=$(sed -n 1p "$work/broker.out")
id=$(sed -n 2p "$work/broker.out")
hostport=${url#http://}

"$bin/kubesim" --kubeconfig "$work/home/.kube/config" --route "mq/sts/hivemq:8888=$hostport" \
  >"$work/kubesim.log" 2>&1 &
sim=$!
export KUBECONFIG="$work/home/.kube/config"
until kubectl get ns >/dev/null 2>&1; do sleep 0.2; done
kubectl apply -f - >/dev/null <<'YAML'
apiVersion: v1
kind: Namespace
metadata: {name: mq}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: hivemq, namespace: mq}
spec:
  replicas: 3
  serviceName: hivemq
  selector: {matchLabels: {app: hivemq}}
  template:
    metadata: {labels: {app: hivemq}}
    spec:
      containers:
      - name: hivemq
        image: hivemq/hivemq4
        ports: [{name: rest-8888, containerPort: 8888}]
YAML
until [ "$(kubectl get pods -n mq -o name 2>/dev/null | wc -l)" -eq 3 ] \
  && kubectl wait -n mq --for=condition=Ready pod --all --timeout=1s >/dev/null 2>&1; do sleep 0.2; done

cat >"$work/config.toml" <<CONF
[cache]
dir = "$work/cache"
[[hivemq]]
name = "url"
url = "$url"
[[hivemq]]
name = "k8s"
kubernetes = { namespace = "mq", statefulset = "hivemq" }
CONF
env HOME="$work/home" XDG_RUNTIME_DIR="$work/run" XDG_STATE_HOME="$work/state" \
  "$bin/snapfsd" --mountpoint "$work/mnt" --config "$work/config.toml" >"$work/daemon.log" 2>&1 &
daemon=$!
until [ -d "$work/mnt/hivemq/k8s" ]; do sleep 0.2; done

read_file() {
  cold
  local t0 t1
  t0=$(now)
  cat "$1" >/dev/null
  t1=$(now)
  echo "$t1 - $t0" | bc -l
}
direct=$(read_file "$work/mnt/hivemq/url/snapshots/$id.backup")
forwarded=$(read_file "$work/mnt/hivemq/k8s/snapshots/$id.backup")

kubectl port-forward -n mq pod/hivemq-0 :8888 >"$work/pf.out" 2>&1 &
pf=$!
until grep -q 'Forwarding from 127.0.0.1' "$work/pf.out"; do sleep 0.1; done
pfport=$(sed -n 's/^Forwarding from 127.0.0.1:\([0-9]*\) .*/\1/p' "$work/pf.out" | head -1)
cold
t0=$(now)
curl -sS -f -o /dev/null "http://127.0.0.1:$pfport/api/v1/management/files/backups/$id"
t1=$(now)
kubectl_pf=$(echo "$t1 - $t0" | bc -l)

socket=$(find "$work/run" -name "forward-*.sock" | head -1)
api="http://hivemq/api/v1/management/backups"
t0=$(now)
for _ in $(seq "$n"); do curl -sS -f -o /dev/null --unix-socket "$socket" "$api"; done
t1=$(now)
urls=()
for _ in $(seq "$n"); do urls+=("$api" -o /dev/null); done
curl -sS -f --unix-socket "$socket" "$api" -o /dev/null >/dev/null # warm the pod choice
t2=$(now)
curl -sS -f --unix-socket "$socket" "${urls[@]}"
t3=$(now)

python3 - "$size_mib" "$direct" "$forwarded" "$kubectl_pf" "$n" "$t0" "$t1" "$t2" "$t3" <<'PY'
import sys
mib = int(sys.argv[1])
direct, fwd, kpf = map(float, sys.argv[2:5])
n = int(sys.argv[5])
t0, t1, t2, t3 = map(float, sys.argv[6:10])
print(f"cold read of a {mib} MiB backup")
print(f"  by URL (baseline):                 {direct:6.2f} s  {mib / direct:7.1f} MiB/s")
print(f"  by coordinates (own port-forward): {fwd:6.2f} s  {mib / fwd:7.1f} MiB/s  {direct / fwd:.2f}x the baseline's speed")
print(f"  curl through kubectl port-forward: {kpf:6.2f} s  {mib / kpf:7.1f} MiB/s  {direct / kpf:.2f}x")
per_request, pooled = (t1 - t0) / n, (t3 - t2) / n
print(f"{n} listings through the forward socket")
print(f"  a forward per request: {per_request * 1000:6.1f} ms each")
print(f"  one kept-alive forward: {pooled * 1000:6.1f} ms each  ({per_request / pooled:.1f}x faster)")
PY
