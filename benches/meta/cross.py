#!/usr/bin/env python3
"""How soon a change made through one mount is seen through another (two metaservers
sharing one database, or two clients of one metaserver), and how soon a lock released
through one is granted to a process waiting for it through the other.

    benches/meta/cross.py /mnt/a /mnt/b [--n 200]

Each round lists the directory through B (so B's client caches it, complete), creates a
file through A, and polls B until the file shows; prints the p50 and max of the delay
from the create's return, and how often the first look already saw it (at once). Then
each of --locks rounds holds an fcntl lock through A while a process waits for it
(F_SETLKW) through B, releases it, and times the grant from the release.
See docs/benchmarking.md.
"""
import argparse, fcntl, os, shutil, statistics, subprocess, sys, time

WAITER = """
import fcntl, sys, time
f = open(sys.argv[1], "r+")
print("waiting", flush=True)
fcntl.lockf(f, fcntl.LOCK_EX)
print(time.monotonic(), flush=True)
"""


def lock_handoffs(da, db, n):
    """Delays (us) from a release through A to the grant of a waiter through B."""
    path_a, path_b = os.path.join(da, "lock"), os.path.join(db, "lock")
    open(path_a, "w").close()
    delays = []
    with open(path_a, "r+") as f:
        for _ in range(n):
            fcntl.lockf(f, fcntl.LOCK_EX)
            w = subprocess.Popen([sys.executable, "-c", WAITER, path_b], stdout=subprocess.PIPE, text=True)
            assert w.stdout.readline().strip() == "waiting"
            time.sleep(0.05)  # inside its F_SETLKW, refused at least once
            t = time.monotonic()
            fcntl.lockf(f, fcntl.LOCK_UN)
            granted = float(w.stdout.readline())
            w.wait()
            delays.append((granted - t) * 1e6)
    return sorted(delays)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--locks", type=int, default=20)
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
    locks = lock_handoffs(da, db, args.locks) if args.locks else []
    shutil.rmtree(da)
    delays.sort()
    print(f"| create seen through the other mount, p50 (us) | {statistics.median(delays):,.1f} |")
    print(f"| create seen through the other mount, max (us) | {delays[-1]:,.1f} |")
    print(f"| seen at the first look after the create returned | {first} of {args.n} |")
    if locks:
        print(f"| lock released through one mount, granted through the other, p50 (us) | {statistics.median(locks):,.1f} |")
        print(f"| ... max (us) | {locks[-1]:,.1f} |")


if __name__ == "__main__":
    main()
