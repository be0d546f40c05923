#!/usr/bin/env python3
"""Metadata latency and rate through several mounts in one run, with ratios to the first.

    benches/meta/run.py embedded=/mnt/a quic=/mnt/b [--stats 5000] [--files 2000]

Mount each target with --attr-ttl-ms 0 so every stat reaches the metaserver (otherwise the
kernel's attribute cache answers and the figure measures nothing). Reports:
  stat p50 / p99 (us): os.stat of one file, repeated;
  creates/s: create + close of empty files in a fresh directory;
  creates/s, 4 writers: the same by four processes at once, each in a directory of its
    own (a site's metaserver serves many writers: this shows what overlaps);
  mkdir+rmdir/s: a directory made and removed;
  64k file p50 / p99 / max (us): create, write 64 KiB, close — the tail shows stalls.
Each figure is the median of --rounds rounds (default 3) in which the targets take turns,
so that a slow spell of a shared machine does not fall on one target alone.
See docs/benchmarking.md.
"""
import argparse, os, shutil, statistics, sys, time


def stat_latency(d, n):
    p = os.path.join(d, "stat-target")
    open(p, "w").close()
    samples = []
    for _ in range(n):
        t = time.perf_counter_ns()
        os.stat(p)
        samples.append((time.perf_counter_ns() - t) / 1000)
    samples.sort()
    return samples[len(samples) // 2], samples[int(len(samples) * 0.99)]


def create_rate(d, n):
    sub = os.path.join(d, "creates")
    os.makedirs(sub, exist_ok=True)
    t = time.perf_counter()
    for i in range(n):
        os.close(os.open(os.path.join(sub, f"f{i}"), os.O_CREAT | os.O_WRONLY, 0o644))
    rate = n / (time.perf_counter() - t)
    shutil.rmtree(sub)
    return rate


def parallel_create_rate(d, n, writers=4):
    """Files made per second by `writers` processes creating n/writers files each."""
    each = n // writers
    subs = [os.path.join(d, f"par{w}") for w in range(writers)]
    for sub in subs:
        os.makedirs(sub, exist_ok=True)
    go_r, go_w = os.pipe()
    pids = []
    for sub in subs:
        pid = os.fork()
        if pid == 0:
            os.close(go_w)
            os.read(go_r, 1)  # all start together
            for i in range(each):
                os.close(os.open(os.path.join(sub, f"f{i}"), os.O_CREAT | os.O_WRONLY, 0o644))
            os._exit(0)
        pids.append(pid)
    os.close(go_r)
    t = time.perf_counter()
    os.write(go_w, b"g" * writers)
    os.close(go_w)
    failed = [pid for pid in pids if os.waitpid(pid, 0)[1] != 0]
    rate = each * writers / (time.perf_counter() - t)
    if failed:
        sys.exit(f"parallel creates: {len(failed)} writers failed")
    for sub in subs:
        shutil.rmtree(sub)
    return rate


def small_file_latency(d, n):
    sub = os.path.join(d, "small")
    os.makedirs(sub, exist_ok=True)
    data = os.urandom(64 << 10)
    samples = []
    for i in range(n):
        t = time.perf_counter_ns()
        fd = os.open(os.path.join(sub, f"f{i}"), os.O_CREAT | os.O_WRONLY, 0o644)
        os.write(fd, data)
        os.close(fd)
        samples.append((time.perf_counter_ns() - t) / 1000)
    shutil.rmtree(sub)
    samples.sort()
    return samples[len(samples) // 2], samples[int(len(samples) * 0.99)], samples[-1]


def mkdir_rate(d, n):
    t = time.perf_counter()
    for i in range(n):
        p = os.path.join(d, f"dir{i}")
        os.mkdir(p)
        os.rmdir(p)
    return n / (time.perf_counter() - t)


def measure(d, a):
    """Every metric once through the mount at `d`."""
    work = os.path.join(d, "meridian-meta-bench")
    os.makedirs(work, exist_ok=True)
    p50, p99 = stat_latency(work, a.stats)
    row = {
        "stat p50 (us)": p50,
        "stat p99 (us)": p99,
        "creates/s": create_rate(work, a.files),
        "creates/s, 4 writers": parallel_create_rate(work, a.files * 2),
        "mkdir+rmdir/s": mkdir_rate(work, a.files // 2),
    }
    small = small_file_latency(work, a.files)
    for label, v in zip(("p50", "p99", "max"), small):
        row[f"64k file {label} (us)"] = v
    shutil.rmtree(work)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("targets", nargs="+", help="NAME=DIRECTORY; the first is the baseline")
    ap.add_argument("--stats", type=int, default=5000)
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds over all targets in turn; each figure is the median (default 3)")
    a = ap.parse_args()
    runs = {}
    for r in range(a.rounds):
        for t in a.targets:
            name, d = t.split("=", 1)
            runs.setdefault(name, []).append(measure(d, a))
            print(f"  round {r + 1}: {name} done", file=sys.stderr)
    rows = {n: {m: statistics.median(run[m] for run in rs) for m in rs[0]} for n, rs in runs.items()}
    names = list(rows)
    base = names[0]
    head = ["metric"] + names + [f"{n}/{base}" for n in names[1:]]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for metric in rows[base]:
        vals = [rows[n][metric] for n in names]
        ratios = [f"{v / vals[0]:.2f}x" for v in vals[1:]]
        print("| " + " | ".join([metric] + [f"{v:,.1f}" for v in vals] + ratios) + " |")
    print(f"(median of {a.rounds} rounds, the targets taking turns; latency rows: lower is "
          "better; rate rows: higher is better)")


if __name__ == "__main__":
    main()
