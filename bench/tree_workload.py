#!/usr/bin/env python3
"""The file tree of bench/incremental.sh: build it from files on this machine, change ~1 % of it,
and time random reads of a file.

  build DEST MIB FILES SRC...  copy a deterministic choice of regular files from SRC... into DEST,
                               about MIB MiB in about FILES files; prints "files bytes"
  change DEST                  rewrite 128 KiB at a fixed pseudo-random offset in each of the 8
                               largest files and add 50 new files of 20 KB; prints bytes written
  largest DEST N               the N largest files, largest first (one path a line)
  pread FILE N SEED            N reads of 4 KiB at seeded random aligned offsets; prints seconds
"""

import os
import random
import shutil
import stat
import sys
import time

SEED = 20261203
SMALL = 256 << 10  # files below this fill the count, the others fill the bytes
CHANGED_FILES = 8
CHANGE_BYTES = 128 << 10
NEW_FILES = 50
NEW_FILE_BYTES = 20_000
PAGE = 4096


def regular_files(root):
    """(path, size) of the readable regular files under root, in sorted order, symlinks not
    followed, so the choice is the same on every run of the same machine."""
    out = []
    for top, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(top, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and st.st_size > 0 and os.access(path, os.R_OK):
                out.append((path, st.st_size))
    return out


def build(dest, mib, files, sources):
    budget = mib << 20
    pool = []
    for src in sources:
        if os.path.isdir(src):
            prefix = src.strip("/").replace("/", "_")
            pool += [(p, s, os.path.join(prefix, os.path.relpath(p, src)))
                     for p, s in regular_files(src)]
    # The two largest files that fit an eighth of the budget are taken first: the read
    # benchmarks read them.
    pool.sort(key=lambda f: (-f[1], f[0]))
    first = [f for f in pool if f[1] <= budget // 8][:2]
    rest = [f for f in pool if f not in first]
    random.Random(SEED).shuffle(rest)
    small = [f for f in rest if f[1] < SMALL]
    large = [f for f in rest if f[1] >= SMALL]

    chosen = list(first)
    # Small files up to ~97 % of the count or half the bytes, then large files to the budget.
    taken = small_bytes = 0
    for f in small:
        if len(chosen) >= files * 0.97 or small_bytes + f[1] > budget // 2:
            break
        chosen.append(f)
        small_bytes += f[1]
        taken += 1
    total = sum(f[1] for f in chosen)
    for f in large + small[taken:]:
        if total >= budget * 0.99:
            break
        if total + f[1] <= budget:
            chosen.append(f)
            total += f[1]

    copied = 0
    for src, size, rel in chosen:
        target = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        try:
            shutil.copyfile(src, target)
        except OSError:
            continue
        copied += 1
    print(copied, sum(os.path.getsize(os.path.join(top, n))
                      for top, _, names in os.walk(dest) for n in names))


def largest(dest, n):
    return [p for p, _ in sorted(regular_files(dest), key=lambda f: (-f[1], f[0]))[:n]]


def change(dest):
    rng = random.Random(SEED + 1)
    written = 0
    for path in largest(dest, CHANGED_FILES):
        size = os.path.getsize(path)
        offset = rng.randrange(0, max(1, size - CHANGE_BYTES))
        with open(path, "r+b") as f:
            f.seek(offset)
            f.write(rng.randbytes(min(CHANGE_BYTES, size)))
        written += min(CHANGE_BYTES, size)
    os.makedirs(os.path.join(dest, "new"), exist_ok=True)
    for i in range(NEW_FILES):
        with open(os.path.join(dest, "new", f"file-{i:02}.bin"), "wb") as f:
            f.write(rng.randbytes(NEW_FILE_BYTES))
        written += NEW_FILE_BYTES
    print(written)


def pread(path, n, seed):
    rng = random.Random(seed)
    start = time.monotonic()
    fd = os.open(path, os.O_RDONLY)
    try:
        pages = max(1, os.fstat(fd).st_size // PAGE)
        for _ in range(n):
            if len(os.pread(fd, PAGE, rng.randrange(pages) * PAGE)) == 0:
                sys.exit(f"{path}: short read")
    finally:
        os.close(fd)
    print(f"{time.monotonic() - start:.4f}")


def main(argv):
    cmd = argv[1] if len(argv) > 1 else ""
    if cmd == "build" and len(argv) >= 5:
        build(argv[2], int(argv[3]), int(argv[4]), argv[5:])
    elif cmd == "change" and len(argv) == 3:
        change(argv[2])
    elif cmd == "largest" and len(argv) == 4:
        print("\n".join(largest(argv[2], int(argv[3]))))
    elif cmd == "pread" and len(argv) == 5:
        pread(argv[2], int(argv[3]), int(argv[4]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
