#!/usr/bin/env bash
# One-run comparison on one machine: the raw local disk, Meridian (blocks in an S3 bucket,
# NVMe cache on the same disk) and, if installed, JuiceFS (SQLite metadata, same bucket
# server, default options). Prints the bucket's own PUT/GET rates, then two tables:
#   warm: reads after a remount (memory caches empty, disk caches full, page cache dropped)
#   cold: reads after a remount with every disk cache emptied (blocks come from the bucket)
#
#   S3_ENDPOINT=http://127.0.0.1:3900 S3_BUCKET=bench S3_KEY=GK... S3_SECRET=... \
#   [JFS_BUCKET=jfs JUICEFS=/path/to/juicefs] [SIZE=1G] [ROUNDS=1] [SPLIT=0:1] \
#   benches/fio/compare.sh /scratch/dir
#
# ROUNDS=N runs every job N times per target and prints medians (run.py --rounds).
#
# SPLIT=CLIENT_CPUS:SERVER_CPUS (e.g. SPLIT=0:1) lays the machine out as a site, where the
# S3 server is a machine of its own: the process listening on S3_ENDPOINT's port is pinned
# to SERVER_CPUS for the run (its affinity is restored at the end), and everything else —
# the mounts, fio, `meridian bench s3` — runs on CLIENT_CPUS.
#
# Run as root (drops the page cache between phases). See docs/benchmarking.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=${1:?usage: compare.sh SCRATCH_DIR}
size=${SIZE:-1G}
meridian=${MERIDIAN:-$here/../../target/release/meridian}
: "${S3_ENDPOINT:?}" "${S3_BUCKET:?}" "${S3_KEY:?}" "${S3_SECRET:?}"

restore=:
if [[ -n "${SPLIT:-}" ]]; then
  port=${S3_ENDPOINT##*:}; port=${port%%/*}
  server=$(ss -Hltnp "sport = :$port" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)
  [[ -n "$server" ]] || { echo "compare.sh: SPLIT: no process listens on port $port of S3_ENDPOINT=$S3_ENDPOINT (is the S3 server on this machine?)" >&2; exit 1; }
  was=$(taskset -p "$server" | awk '{print $NF}')
  taskset -a -p -c "${SPLIT##*:}" "$server" >/dev/null
  restore="taskset -a -p $was $server >/dev/null"
  taskset -p -c "${SPLIT%%:*}" $$ >/dev/null # children (mounts, fio) inherit it
  echo "layout: client side on CPUs ${SPLIT%%:*}, the S3 server (pid $server) on CPUs ${SPLIT##*:}"
else
  echo "layout: every process on every CPU (SPLIT unset)"
fi
# A guest that halts idle vCPUs without polling makes every FUSE round trip dearer
# (docs/operations.md, "Client machines that are virtual machines").
poll=/sys/module/haltpoll/parameters/guest_halt_poll_ns
if [[ -r $poll ]]; then echo "guest halt polling: $(cat $poll) ns"; fi
s3=(--bucket "$S3_BUCKET" --endpoint "$S3_ENDPOINT" --access-key-id "$S3_KEY" --secret-access-key "$S3_SECRET")

mkdir -p "$work/raw" "$work/mnt-meridian" "$work/meridian-data"
m_mount="$meridian mount $work/mnt-meridian --data-dir $work/meridian-data ${s3[*]} --cache-memory-bytes $((256 << 20)) >/dev/null"
m_umount="$meridian umount $work/mnt-meridian"
eval "$m_mount"
trap 'eval "$m_umount" || true; eval "$restore"' EXIT

targets=(raw="$work/raw" meridian="$work/mnt-meridian/bench")
warm_hooks=(--before-read "meridian=$m_umount && sleep 0.5 && $m_mount")
cold_hooks=(--before-read "meridian=$m_umount && $meridian cache --data-dir $work/meridian-data ${s3[*]} --evict >/dev/null && sleep 0.5 && $m_mount")

if [[ -n "${JUICEFS:-}" && -n "${JFS_BUCKET:-}" ]]; then
  mkdir -p "$work/mnt-jfs" "$work/jfs-meta" "$work/jfs-cache"
  rm -f "$work/jfs-meta/jfs.db"
  "$JUICEFS" format --storage s3 --bucket "$S3_ENDPOINT/$JFS_BUCKET" --access-key "$S3_KEY" \
    --secret-key "$S3_SECRET" "sqlite3://$work/jfs-meta/jfs.db" "bench$(date +%s)" >/dev/null
  j_mount="$JUICEFS mount -d --cache-dir $work/jfs-cache sqlite3://$work/jfs-meta/jfs.db $work/mnt-jfs >/dev/null 2>&1"
  j_umount="$JUICEFS umount $work/mnt-jfs"
  eval "$j_mount"
  trap 'eval "$m_umount" || true; eval "$j_umount" || true; eval "$restore"' EXIT
  targets+=(juicefs="$work/mnt-jfs/bench")
  warm_hooks+=(--before-read "juicefs=$j_umount && $j_mount")
  cold_hooks+=(--before-read "juicefs=$j_umount && rm -rf $work/jfs-cache/* && $j_mount")
fi

echo "== the bucket itself (same server, same run)"
"$meridian" bench s3 "${s3[@]}" --mib 1024 --parallel 16
"$meridian" bench s3 "${s3[@]}" --mib 1024 --parallel 8 --drop-caches
"$meridian" bench s3 "${s3[@]}" --mib 512 --parallel 1
echo "== warm (disk caches full, memory caches and page cache empty)"
python3 "$here/run.py" --size "$size" --rounds "${ROUNDS:-1}" "${targets[@]}" "${warm_hooks[@]}"
echo "== cold (every cache empty: reads come from the bucket)"
python3 "$here/run.py" --size "$size" --rounds "${ROUNDS:-1}" "${targets[@]}" "${cold_hooks[@]}"
