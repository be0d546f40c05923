#!/bin/sh
# One metadata run on this machine: an embedded mount, a mount through a QUIC metaserver
# (redb), one through a QUIC metaserver over PostgreSQL (alone on its database: sole
# mode), and one through a QUIC metaserver over another PostgreSQL database with sole
# mode off (what each write costs where several metaservers write), then
# benches/meta/run.py across the four; then benches/meta/cross.py between two clients of the QUIC
# metaserver, and between clients of two metaservers over the one PostgreSQL. PostgreSQL comes from Debian's packages (apt-get install postgresql);
# the cluster runs as the postgres user on loopback, in WORK. Blocks stay local
# (no bucket): this measures metadata only. Run as root.
#
#   benches/meta/compare.sh /tmp/metabench [run.py options, e.g. --files 2000]
#
# SPLIT=CLIENT_CPUS:SERVER_CPUS (e.g. SPLIT=0:1) pins the server side (PostgreSQL and the
# metaservers) to SERVER_CPUS and the client side (every mount, the embedded one
# included, and the load) to CLIENT_CPUS: one machine laid out as a site is, a
# workstation and a metadata server that do not share cores. Unset, everything shares
# every core (the server's work then competes with the client's, as it never does on a
# site).
set -eu
WORK=${1:?usage: compare.sh WORKDIR [run.py options]}
shift
HERE=$(cd "$(dirname "$0")" && pwd)
M=${MERIDIAN:-$HERE/../../target/release/meridian}
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | tail -1)
PGPORT=${PGPORT:-55439}
if [ -n "${SPLIT:-}" ]; then
    ON_CLIENT="taskset -c ${SPLIT%%:*}"; ON_SERVER="taskset -c ${SPLIT##*:}"
    echo "layout: client side on CPUs ${SPLIT%%:*}, server side on CPUs ${SPLIT##*:}"
else
    ON_CLIENT=; ON_SERVER=
    echo "layout: every process on every CPU (SPLIT unset)"
fi
# See docs/operations.md, "Client machines that are virtual machines".
POLL=/sys/module/haltpoll/parameters/guest_halt_poll_ns
if [ -r $POLL ]; then echo "guest halt polling: $(cat $POLL) ns"; fi
rm -rf "$WORK"; mkdir -p "$WORK/pg" "$WORK/mnt/emb" "$WORK/mnt/quic" "$WORK/mnt/qpg" \
    "$WORK/mnt/qpgs" "$WORK/mnt/quic2" "$WORK/mnt/qpg2"
chown postgres "$WORK/pg"

cleanup() {
    for m in emb quic qpg qpgs quic2 qpg2; do "$M" umount "$WORK/mnt/$m" 2>/dev/null || umount -l "$WORK/mnt/$m" 2>/dev/null || true; done
    kill $S1 $S2 $S3 $S4 2>/dev/null || true
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/pg/data" -m immediate stop >/dev/null 2>&1 || true
}
S1=; S2=; S3=; S4=
trap cleanup EXIT

runuser -u postgres -- "$PGBIN/initdb" --auth=trust --username=postgres --no-sync -D "$WORK/pg/data" >/dev/null
$ON_SERVER runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/log" -w \
    -o "-p $PGPORT -k $WORK/pg -c listen_addresses=127.0.0.1" start >/dev/null

site() { # name port extra-line
    mkdir -p "$WORK/$1"
    printf 'data_dir = "%s/%s/data"\nlisten = "127.0.0.1:%s"\n%s\n' "$WORK" "$1" "$2" "$3" > "$WORK/$1/site.toml"
    "$M" metaserver -c "$WORK/$1/site.toml" add-client bench | awk 'NR==1{print $4}' > "$WORK/$1/token"
    $ON_SERVER "$M" metaserver -c "$WORK/$1/site.toml" > "$WORK/$1/log" 2>&1 &
}
runuser -u postgres -- "$PGBIN/createdb" -h "$WORK/pg" -p "$PGPORT" shared
site quic 7451 ""; S1=$!
site qpg 7452 "postgres = \"postgresql://postgres@127.0.0.1:$PGPORT/postgres\""; S2=$!
site qpgs 7454 "postgres = \"postgresql://postgres@127.0.0.1:$PGPORT/shared\"
postgres_sole_writer = false"; S4=$!
sleep 2

$ON_CLIENT "$M" mount "$WORK/mnt/emb" --data-dir "$WORK/emb" --attr-ttl-ms 0
client() { # mount site port
    $ON_CLIENT "$M" mount "$WORK/mnt/$1" --data-dir "$WORK/c-$1" --attr-ttl-ms 0 --meta "quic://127.0.0.1:$3" \
        --meta-cert "$WORK/$2/data/metaserver.crt" --meta-token "$(cat "$WORK/$2/token")"
}
client quic quic 7451; client qpg qpg 7452; client qpgs qpgs 7454
$ON_CLIENT python3 "$HERE/run.py" "$@" embedded="$WORK/mnt/emb" quic="$WORK/mnt/quic" quic-postgres="$WORK/mnt/qpg" \
    quic-postgres-shared="$WORK/mnt/qpgs"
# The second PostgreSQL metaserver starts only now: with it alive, every change the first
# makes is announced to it, a cost the single-metaserver figures above do not carry.
site qpg2 7453 "postgres = \"postgresql://postgres@127.0.0.1:$PGPORT/postgres\""; S3=$!
sleep 2
client quic2 quic 7451; client qpg2 qpg2 7453
echo "two clients of one metaserver (quic):"
$ON_CLIENT python3 "$HERE/cross.py" "$WORK/mnt/quic" "$WORK/mnt/quic2"
echo "clients of two metaservers over one PostgreSQL:"
$ON_CLIENT python3 "$HERE/cross.py" "$WORK/mnt/qpg" "$WORK/mnt/qpg2"
