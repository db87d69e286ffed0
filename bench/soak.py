#!/usr/bin/env python3
"""Soak of one snapfs mount: readers at random offsets of a snapshot, compared byte for byte
with the source, while writers copy folders into uploads/, wait for them, check them and remove
them. Prints one line of figures every 30 s and a summary; exits 1 on any mismatch or hang.

Usage (bench/soak.sh starts the mount): soak.py SNAPFS TARGET SOURCE WORK SECONDS READERS WRITERS
  TARGET  MOUNT/cloud/<remote>, holding snapshot "soak" of SOURCE
  SOURCE  the folder snapshot "soak" was made of (unchanged since)
"""

import glob
import json
import os
import random
import subprocess
import sys
import threading
import time

SNAPFS, TARGET, SOURCE, WORK = sys.argv[1:5]
SECONDS, READERS, WRITERS = (int(a) for a in sys.argv[5:8])
# An operation that takes longer than this is a hang: reported, and the run fails.
HANG = 120.0

lock = threading.Lock()
stats = {
    "reads": 0, "read_bytes": 0, "mismatches": 0, "read_errors": 0,
    "uploads": 0, "upload_failures": 0, "hangs": 0, "slowest_read": 0.0,
    "slowest_upload": 0.0,
}
problems = []
stop = threading.Event()


def note(key, value=1):
    with lock:
        stats[key] += value


def problem(text):
    with lock:
        problems.append(text)
    print("PROBLEM:", text, flush=True)


def files_of(root):
    out = []
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            if os.path.isfile(p) and not os.path.islink(p) and os.path.getsize(p) > 0:
                out.append(os.path.relpath(p, root))
    return out


def reader(seed):
    rng = random.Random(seed)
    files = files_of(SOURCE)
    while not stop.is_set():
        rel = rng.choice(files)
        size = os.path.getsize(os.path.join(SOURCE, rel))
        length = rng.choice([1, 512, 4096, 65536, 262144])
        offset = rng.randrange(size)
        began = time.monotonic()
        try:
            fd = os.open(os.path.join(TARGET, "snapshots/soak", rel), os.O_RDONLY)
            try:
                got = os.pread(fd, length, offset)
            finally:
                os.close(fd)
        except OSError as e:
            note("read_errors")
            problem(f"read {rel}@{offset}: {e}")
            continue
        took = time.monotonic() - began
        with open(os.path.join(SOURCE, rel), "rb") as f:
            f.seek(offset)
            want = f.read(length)
        with lock:
            stats["reads"] += 1
            stats["read_bytes"] += len(got)
            stats["slowest_read"] = max(stats["slowest_read"], took)
        if got != want:
            note("mismatches")
            problem(f"WRONG BYTES {rel}@{offset}+{length}: {len(got)} bytes, expected {len(want)}")
        if took > HANG:
            note("hangs")
            problem(f"read {rel}@{offset} took {took:.0f} s")


def run(cmd):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=HANG)


def writer(k):
    rng = random.Random(1000 + k)
    src = os.path.join(WORK, f"writer-{k}")
    os.makedirs(src, exist_ok=True)
    base = [rng.randbytes(rng.choice([100, 5000, 70000, 800000])) for _ in range(12)]
    i = 0
    while not stop.is_set():
        i += 1
        # Each round changes one file, so uploads have something new and much in common.
        base[rng.randrange(len(base))] = rng.randbytes(rng.choice([100, 5000, 70000, 800000]))
        for n, data in enumerate(base):
            with open(os.path.join(src, f"f{n}"), "wb") as f:
                f.write(data)
        name = f"w{k}-{i}"
        began = time.monotonic()
        try:
            cp = run(["cp", "-r", src, os.path.join(TARGET, "uploads", name)])
            waited = run([SNAPFS, "wait", os.path.join(TARGET, "uploads", name)])
        except subprocess.TimeoutExpired as e:
            note("hangs")
            problem(f"upload {name}: {e}")
            continue
        took = time.monotonic() - began
        with lock:
            stats["slowest_upload"] = max(stats["slowest_upload"], took)
        if cp.returncode != 0 or waited.returncode != 0:
            note("upload_failures")
            problem(f"upload {name}: cp {cp.returncode} {cp.stderr.strip()} / wait "
                    f"{waited.returncode} {waited.stderr.strip()}")
            continue
        snap = os.path.join(TARGET, "snapshots", name)
        for n, data in enumerate(base):
            try:
                with open(os.path.join(snap, f"f{n}"), "rb") as f:
                    got = f.read()
            except OSError as e:
                got = None
                problem(f"read back {name}/f{n}: {e}")
            if got != data:
                note("mismatches")
                problem(f"WRONG BYTES in uploaded {name}/f{n}")
        note("uploads")
        try:
            rm = run([SNAPFS, "rm", "--yes", snap])
            if rm.returncode != 0:
                problem(f"rm {name}: {rm.stderr.strip()}")
        except subprocess.TimeoutExpired as e:
            note("hangs")
            problem(f"rm {name}: {e}")


def daemon_pid():
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    mount = os.path.dirname(os.path.dirname(os.path.abspath(TARGET)))
    for path in glob.glob(os.path.join(runtime, "**", "*.json"), recursive=True):
        try:
            with open(path) as f:
                record = json.load(f)
        except (OSError, ValueError):
            continue
        if os.path.abspath(record.get("mountpoint", "")) == mount:
            return record["pid"]
    return None


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    pid = daemon_pid()
    threads = [threading.Thread(target=reader, args=(s,), daemon=True) for s in range(READERS)]
    threads += [threading.Thread(target=writer, args=(k,), daemon=True) for k in range(WRITERS)]
    for t in threads:
        t.start()
    began = time.monotonic()
    rss = []
    last_print = began
    while time.monotonic() - began < SECONDS:
        time.sleep(2)
        if pid:
            rss.append(rss_kib(pid))
        if time.monotonic() - last_print >= 30:
            last_print = time.monotonic()
            with lock:
                s = dict(stats)
            print(f"{last_print - began:5.0f} s  reads {s['reads']}  uploads {s['uploads']}  "
                  f"mismatches {s['mismatches']}  rss {rss[-1] // 1024 if rss else '?'} MiB",
                  flush=True)
    stop.set()
    for t in threads:
        t.join(timeout=HANG + 10)
        if t.is_alive():
            note("hangs")
            problem("a worker did not finish")
    elapsed = time.monotonic() - began
    s = stats
    print(f"duration {elapsed:.0f} s, {READERS} readers, {WRITERS} writers")
    print(f"reads {s['reads']} ({s['reads'] / elapsed:.0f}/s, {s['read_bytes'] / elapsed / 2**20:.1f} MiB/s), "
          f"slowest {s['slowest_read']:.2f} s, errors {s['read_errors']}")
    print(f"uploads {s['uploads']} checked and removed, failures {s['upload_failures']}, "
          f"slowest cp+wait {s['slowest_upload']:.1f} s")
    print(f"mismatches {s['mismatches']}, hangs {s['hangs']}")
    if rss:
        quarter = max(1, len(rss) // 4)
        print(f"daemon RSS MiB: first quarter max {max(rss[:quarter]) // 1024}, "
              f"last quarter max {max(rss[-quarter:]) // 1024}, max {max(rss) // 1024}")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
