#!/usr/bin/env bash
# Read benchmark against moto, run by hand: cold sequential read of a 1 GiB snapshot file
# through the mount vs a plain GET of the same raw bytes from the same server (curl), cold
# 1-byte read vs a 1-byte ranged GET, and the daemon's peak RSS with 16 concurrent readers.
# Needs the emulators .ci/run installs and built binaries (cargo build -p snapfsd -p snapfs).
set -euo pipefail
emu="${SNAPFS_EMULATORS_DIR:-$HOME/.cache/snapfs-ci}"
bin="${CARGO_TARGET_DIR:-$(dirname "$0")/../target}/${PROFILE:-release}"
size_mib="${SIZE_MIB:-1024}"
work=$(mktemp -d /tmp/snapfs-bench-XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"
"$emu/venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
moto=$!
daemon=""
cleanup() {
  [ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null || true
  umount -l "$work/mnt" 2>/dev/null || true
  kill "$moto" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
until curl -s -o /dev/null "$url"; do sleep 0.2; done
curl -sf -X PUT "$url/bench" >/dev/null
mkdir -p "$work/mnt" "$work/home"
cat >"$work/config.toml" <<CONF
[upload]
settle = "300ms"
[cache]
dir = "$work/cache"
memory = "256MiB"
[[remote]]
name = "s3"
url = "s3://bench"
options = { endpoint = "$url", allow_http = "true", region = "us-east-1", access_key_id = "b", secret_access_key = "b" }
CONF
start() {
  HOME="$work/home" XDG_RUNTIME_DIR="$work/run" XDG_STATE_HOME="$work/state" \
    "$bin/snapfsd" --mountpoint "$work/mnt" --config "$work/config.toml" >>"$work/daemon.log" 2>&1 &
  daemon=$!
  until [ -d "$work/mnt/cloud/s3/snapshots" ]; do sleep 0.2; done
}
stop() { kill "$daemon"; wait "$daemon" || true; daemon=""; rm -rf "$work/cache"; }
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2-$1:.3f}')"; }

head -c $((size_mib << 20)) /dev/urandom >"$work/random.bin"
{ yes "compressible line of text, repeated over and over" || true; } | head -c $((size_mib << 20)) >"$work/text.bin"
# moto refuses unsigned reads, so the baselines are uploaded with boto3 (installed with moto)
# and read with curl through presigned URLs: a plain HTTP GET of the same bytes.
py="$emu/venv/bin/python"
s3py() {
  "$py" - "$url" "$@" <<'PY'
import sys, boto3
url, op, key = sys.argv[1:4]
s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                  aws_access_key_id="b", aws_secret_access_key="b")
if op == "put":
    s3.upload_file(sys.argv[4], "bench", key)
    print(s3.head_object(Bucket="bench", Key=key)["ContentLength"])
else:
    print(s3.generate_presigned_url("get_object", Params={"Bucket": "bench", "Key": key}, ExpiresIn=3600))
PY
}
for kind in random text; do
  got=$(s3py put "raw-$kind.bin" "$work/$kind.bin")
  [ "$got" = "$((size_mib << 20))" ] || { echo "baseline upload of $kind failed ($got bytes)" >&2; exit 1; }
done
start
cp "$work/random.bin" "$work/text.bin" "$work/mnt/cloud/s3/uploads/"
HOME="$work/home" XDG_RUNTIME_DIR="$work/run" "$bin/snapfs" wait "$work/mnt/cloud/s3/uploads/random.bin" >/dev/null 2>&1 || true
until [ -f "$work/mnt/cloud/s3/snapshots/random.bin" ] && [ -f "$work/mnt/cloud/s3/snapshots/text.bin" ]; do sleep 1; done
rm -f "$work/random.bin" "$work/text.bin"

for kind in random text; do
  stop; start
  sync; echo 3 >/proc/sys/vm/drop_caches
  get_url=$(s3py url "raw-$kind.bin")
  t0=$(now); curl -sf -o /dev/null "$get_url"; t1=$(now)
  t2=$(now); cat "$work/mnt/cloud/s3/snapshots/$kind.bin" >/dev/null; t3=$(now)
  get=$(secs "$t0" "$t1"); mnt=$(secs "$t2" "$t3")
  store=$(HOME="$work/home" XDG_RUNTIME_DIR="$work/run" "$bin/snapfs" status --json |
    python3 -c 'import json,sys; t=json.load(sys.stdin)[0]["status"]["metrics"]["targets"][0]; print(t["get_requests"], "GETs,", t["get_bytes"] >> 20, "MiB")')
  echo "$kind: store traffic for the read: $store"
  echo "$kind: GET ${get}s, mount ${mnt}s, mount/GET throughput $(python3 -c "print(f'{$get/$mnt:.2f}')")x"
done

stop; start
off=$(( (size_mib << 20) / 2 + 12345 ))
get_url=$(s3py url raw-random.bin)
t0=$(now); curl -sf -o /dev/null -r "$off-$off" "$get_url"; t1=$(now)
t2=$(now); dd if="$work/mnt/cloud/s3/snapshots/random.bin" bs=1 count=1 skip="$off" status=none >/dev/null; t3=$(now)
get=$(secs "$t0" "$t1"); mnt=$(secs "$t2" "$t3")
echo "1 byte: ranged GET ${get}s, mount ${mnt}s, latency $(python3 -c "print(f'{$mnt/$get:.2f}')")x"

stop; start
for i in $(seq 16); do cat "$work/mnt/cloud/s3/snapshots/random.bin" >/dev/null & done
wait $(jobs -p | grep -v "^$daemon$" | grep -v "^$moto$") 2>/dev/null || true
echo "16 readers: peak RSS $(awk '/VmHWM/ {print int($2/1024)}' "/proc/$daemon/status") MiB"
