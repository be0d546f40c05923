#!/usr/bin/env python3
"""How soon a change made through one mount is seen through another (two metaservers
sharing one database, or two clients of one metaserver).

    benches/meta/cross.py /mnt/a /mnt/b [--n 200]

Each round lists the directory through B (so B's client caches it, complete), creates a
file through A, and polls B until the file shows; prints the p50 and max of the delay
from the create's return, and how often the first look already saw it (at once).
See docs/benchmarking.md.
"""
import argparse, os, shutil, statistics, time


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--n", type=int, default=200)
    args = ap.parse_args()
    da, db = (os.path.join(m, "meridian-cross-bench") for m in (args.a, args.b))
    os.makedirs(da, exist_ok=True)
    deadline = time.monotonic() + 10
    while not os.path.isdir(db):
        if time.monotonic() > deadline:
            raise SystemExit(f"{db}: not seen through the second mount after 10 s")
        time.sleep(0.001)
    delays, first = [], 0
    for i in range(args.n):
        os.listdir(db)
        name = f"f{i}"
        os.close(os.open(os.path.join(da, name), os.O_CREAT | os.O_WRONLY, 0o644))
        t = time.perf_counter()
        first += os.path.exists(os.path.join(db, name))
        while not os.path.exists(os.path.join(db, name)):
            if time.perf_counter() - t > 10:
                raise SystemExit(f"{name}: created through {args.a}, not seen through {args.b} after 10 s")
        delays.append((time.perf_counter() - t) * 1e6)
    shutil.rmtree(da)
    delays.sort()
    print(f"| create seen through the other mount, p50 (us) | {statistics.median(delays):,.1f} |")
    print(f"| create seen through the other mount, max (us) | {delays[-1]:,.1f} |")
    print(f"| seen at the first look after the create returned | {first} of {args.n} |")


if __name__ == "__main__":
    main()
