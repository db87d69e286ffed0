#!/usr/bin/env python3
"""The SQLite database of bench/incremental.sh (python3 standard library only, fixed seed).

  create DB ROWS   an orders table of ROWS rows (ints, short text, timestamps, amounts) and one
                   secondary index; ~150 MiB for 1,000,000 rows
  update DB        update 1 % of the rows at random and insert 1 % new rows, one transaction
  pages A B        the fraction of 4 KiB pages of B that differ from A at the same offset
                   (pages past the end of A count as changed); prints "changed total fraction"
"""

import datetime
import random
import sqlite3
import sys

SEED = 20261203
PAGE = 4096
STATUSES = ["new", "paid", "packed", "shipped", "delivered", "returned", "cancelled"]
CURRENCIES = ["EUR", "USD", "GBP", "CHF", "SEK"]
WORDS = ["alpha", "bravo", "cedar", "delta", "ember", "fjord", "gamma", "harbor", "indigo",
         "juniper", "kestrel", "lumen", "maple", "nectar", "onyx", "prairie", "quartz", "river"]
EPOCH = datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc).timestamp()


def stamp(seconds):
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S")


def row(rng, ident):
    # Orders arrive in id order, about 30 s apart, as in a table that only grows.
    created = EPOCH + ident * 30 + rng.randrange(30)
    return (
        ident,
        rng.randrange(1, 200_000),                                  # customer_id
        f"SKU-{rng.randrange(100_000):05}-{rng.choice('ABCDEFGH')}",  # sku
        rng.choice(WORDS) + " " + rng.choice(WORDS),                 # product
        rng.randrange(1, 20),                                       # quantity
        round(rng.lognormvariate(3.5, 1.0), 2),                     # amount
        rng.choice(CURRENCIES),
        rng.choice(STATUSES),
        stamp(created),                                             # created_at
        stamp(created + rng.randrange(86400 * 30)),                 # updated_at
        f"{rng.choice(WORDS)}{rng.randrange(1000)}@example.org",    # email
        f"{rng.randrange(1, 400)} {rng.choice(WORDS).title()} Road, {rng.choice(WORDS).title()}",
    )


INSERT = f"INSERT INTO orders VALUES ({', '.join('?' * 12)})"


def create(path, rows):
    rng = random.Random(SEED)
    db = sqlite3.connect(path)
    db.execute("PRAGMA page_size = 4096")
    db.execute("""CREATE TABLE orders (
        id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, sku TEXT NOT NULL,
        product TEXT NOT NULL, quantity INTEGER NOT NULL, amount REAL NOT NULL,
        currency TEXT NOT NULL, status TEXT NOT NULL, created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL, email TEXT NOT NULL, ship_to TEXT NOT NULL)""")
    batch = 50_000
    for start in range(1, rows + 1, batch):
        db.executemany(INSERT, (row(rng, i) for i in range(start, min(start + batch, rows + 1))))
    db.execute("CREATE INDEX orders_customer ON orders (customer_id)")
    db.commit()
    db.close()


def update(path):
    rng = random.Random(SEED + 1)
    db = sqlite3.connect(path)
    (rows,) = db.execute("SELECT max(id) FROM orders").fetchone()
    n = max(1, rows // 100)
    changes = []
    for ident in rng.sample(range(1, rows + 1), n):
        changes.append((rng.choice(STATUSES), round(rng.lognormvariate(3.5, 1.0), 2),
                        stamp(EPOCH + (rows + n) * 30 + rng.randrange(86400)), ident))
    with db:
        db.executemany("UPDATE orders SET status = ?, amount = ?, updated_at = ? WHERE id = ?",
                       changes)
        db.executemany(INSERT, (row(rng, i) for i in range(rows + 1, rows + n + 1)))
    db.close()


def pages(a, b):
    changed = total = 0
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            pb = fb.read(PAGE)
            if not pb:
                break
            total += 1
            if fa.read(PAGE) != pb:
                changed += 1
    print(changed, total, f"{changed / max(1, total):.4f}")


def main(argv):
    cmd = argv[1] if len(argv) > 1 else ""
    if cmd == "create" and len(argv) == 4:
        create(argv[2], int(argv[3]))
    elif cmd == "update" and len(argv) == 3:
        update(argv[2])
    elif cmd == "pages" and len(argv) == 4:
        pages(argv[2], argv[3])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
