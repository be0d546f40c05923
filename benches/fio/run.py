#!/usr/bin/env python3
"""Runs the Meridian fio suite against several directories in one run and prints one table.

    benches/fio/run.py --size 1G raw=/mnt/nvme/bench meridian=/mnt/meridian/bench \\
        [juicefs=/mnt/jfs/bench] [--before-read meridian='meridian umount ... && meridian mount ...']

The first target is the baseline (normally the raw local disk): every other column gets a
ratio against it. Before each read phase the page cache is dropped (as root) and the
target's --before-read command runs (e.g. a remount, to empty a client's memory cache so
reads come from its disk cache). With --rounds N every job runs N times on every target,
the targets taking turns (in reverse order every other round), and the table shows each
figure's median and the median of the per-round ratios. See docs/benchmarking.md for how
to read the table.
"""
import argparse, json, os, shutil, statistics, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))

# (job file, metric name, how to read it from fio's JSON, unit, higher is better)
def bw(side):
    return lambda j: j[side]["bw_bytes"] / 2**20
def p50_us(side):
    # Total latency (submission + completion): through io_uring a FUSE read is done inside
    # the submitting call, so its completion latency alone would be near zero.
    return lambda j: j[side]["lat_ns"]["percentile"]["50.000000"] / 1000
def iops(side):
    return lambda j: j[side]["iops"]
def fps(side):
    return lambda j: j[side]["bw_bytes"] / (50 * 2**20)

PHASES = [
    ("seq-write.fio", [("seq write 1M + fsync", bw("write"), "MiB/s", True)], False),
    ("seq-read.fio", [("seq read 1M", bw("read"), "MiB/s", True)], True),
    # The same read again (after the same hook): what a second playback or fio run sees,
    # e.g. once Meridian has a passthrough copy of a file whose blocks are all local.
    ("seq-read.fio", [("seq read 1M, 2nd run", bw("read"), "MiB/s", True)], True),
    ("rand-read-qd1.fio", [("rand read 4k QD1 p50", p50_us("read"), "us", False),
                           ("rand read 4k QD1", iops("read"), "IOPS", True)], False),
    ("rand-read-qd16.fio", [("rand read 4k QD16", iops("read"), "IOPS", True)], False),
    # After the reads: it rewrites blocks of the file they read.
    ("rand-write.fio", [("rand write 4k QD16 + fsync", iops("write"), "IOPS", True)], False),
    ("small-files.fio", [("create+write 64k files", iops("write"), "files/s", True)], False),
    ("exr-write.fio", [("EXR frames write", bw("write"), "MiB/s", True)], False),
    ("exr-playback.fio", [("EXR playback (24 wanted)", fps("read"), "fps", True)], True),
    ("exr-playback-max.fio", [("EXR playback unthrottled", fps("read"), "fps", True)], True),
]


def drop_caches():
    if os.geteuid() == 0:
        subprocess.run(["sync"], check=False)
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")


def run_fio(job, target, size, runtime):
    env = dict(os.environ, TARGET=target, SIZE=size, RUNTIME=str(runtime))
    # A job that creates files starts from none (another round may have made them).
    for sub, writer in (("small", "small-files.fio"), ("exr", "exr-write.fio")):
        if job == writer:
            shutil.rmtree(os.path.join(target, sub), ignore_errors=True)
    os.makedirs(os.path.join(target, "small"), exist_ok=True)
    os.makedirs(os.path.join(target, "exr"), exist_ok=True)
    out = subprocess.run(["fio", "--output-format=json", os.path.join(HERE, job)],
                         env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"fio {job} on {target} failed: {out.stderr.strip() or out.stdout[-2000:]}")
    data = json.loads(out.stdout[out.stdout.index("{"):])
    return data["jobs"][0]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("targets", nargs="+", help="NAME=DIRECTORY, the first is the baseline")
    ap.add_argument("--size", default="1G", help="size of the large file (fio syntax) [1G]")
    ap.add_argument("--runtime", type=int, default=15, help="seconds per random-read job [15]")
    ap.add_argument("--before-read", action="append", default=[], metavar="NAME=CMD",
                    help="shell command run before each read phase of target NAME")
    ap.add_argument("--extra", action="append", default=[], metavar="NAME=METRIC=VALUE=UNIT",
                    help="an extra figure measured elsewhere in the same run (e.g. Garage's own GET rate)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="runs of each job on every target; the table shows medians [1]")
    ap.add_argument("--json", help="also write the raw figures to this file")
    a = ap.parse_args()
    if a.rounds < 1:
        sys.exit(f"--rounds {a.rounds}: give at least 1")
    targets = [t.split("=", 1) for t in a.targets]
    hooks = dict(h.split("=", 1) for h in a.before_read)
    samples = {name: {} for name, _ in targets}
    units = {}
    for _, d in targets:
        os.makedirs(d, exist_ok=True)
    # Each job runs on every target in turn, so the figures a ratio compares are measured
    # minutes apart at most (this machine's disk and CPUs are shared and drift).
    for job, metrics, is_read in PHASES:
        for r in range(a.rounds):
            for name, d in targets if r % 2 == 0 else targets[::-1]:
                if is_read:
                    drop_caches()
                    if name in hooks:
                        subprocess.run(hooks[name], shell=True, check=True)
                t0 = time.time()
                j = run_fio(job, d, a.size, a.runtime)
                for metric, get, unit, _ in metrics:
                    samples[name].setdefault(metric, []).append(get(j))
                    units[metric] = unit
                print(f"  {name:>10} {job:<20} {time.time() - t0:6.1f}s", file=sys.stderr)
    for _, d in targets:
        for sub in ("small", "exr"):
            shutil.rmtree(os.path.join(d, sub), ignore_errors=True)
        try:
            os.remove(os.path.join(d, "meridian-bench-seq"))
        except FileNotFoundError:
            pass
    for e in a.extra:
        name, metric, value, unit = e.split("=", 3)
        samples.setdefault(name, {})[metric] = [float(value)]
        units[metric] = unit
    print_table(samples, units, [n for n, _ in targets], a.rounds)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(samples, f, indent=2)


def ratio(samples, n, base, metric):
    """The median of the ratios of the rounds (each measured close together), or ''."""
    vs, bs = samples[n].get(metric), samples[base].get(metric)
    if not vs or not bs:
        return ""
    if len(vs) != len(bs):  # an --extra figure: one value against the baseline's median
        vs, bs = [statistics.median(vs)], [statistics.median(bs)]
    rs = [v / b for v, b in zip(vs, bs) if b]
    return f"{statistics.median(rs):.2f}x" if rs else ""


def print_table(samples, units, order, rounds):
    names = order + [n for n in samples if n not in order]
    base = order[0]
    head = ["metric", "unit"] + names + [f"{n}/{base}" for n in names[1:]]
    rows = []
    for metric in units:
        row = [metric, units[metric]]
        for n in names:
            v = samples[n].get(metric)
            row.append("" if not v else f"{statistics.median(v):,.1f}")
        for n in names[1:]:
            row.append(ratio(samples, n, base, metric))
        rows.append(row)
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"
    print(line(head))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))
    print("(ratios: higher is better except for latency rows, where lower is better)")
    if rounds > 1:
        print(f"(each figure the median of {rounds} rounds; each ratio the median of the rounds' ratios)")


if __name__ == "__main__":
    main()
