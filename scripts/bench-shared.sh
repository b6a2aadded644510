#!/usr/bin/env bash
# bench-shared.sh — what --shared-storage costs, measured side by side:
#   1. scripts/bench.sh's fio jobs in a zone of a --shared-storage mount against a zone
#      of a normal mount of the same build (ratio shared/normal per job);
#   2. 4 KiB random writes to one file from two shared mounts of one backing dir at
#      once (IOPS of both together), next to the same job on one shared mount alone;
#   3. with --gluster: the fio jobs in a zone of a --shared-storage mount whose backing
#      dir is on a GlusterFS replica volume (bricks in WORKDIR), against the plain
#      Gluster mount (ratio ezfs/gluster).
# Usage: scripts/bench-shared.sh [--passes N] [--quick] [--workdir DIR] [--gluster]
#   --quick     256M file, 5 s per timed job
#   --passes N  passes of each part, interleaved (default 3); medians with their range
# Run as root. Environment: EZFS (default target/release/ezfs, built if missing).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
PASSES=3 WORKDIR=/var/tmp QUICK= GLUSTER=
while [[ $# -gt 0 ]]; do
    case $1 in
        --passes) PASSES=$2; shift 2 ;;
        --quick) QUICK=--quick; shift ;;
        --workdir) WORKDIR=$2; shift 2 ;;
        --gluster) GLUSTER=1; shift ;;
        -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench-shared.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[[ $(id -u) -eq 0 ]] || { echo "bench-shared.sh: run as root (drop_caches)" >&2; exit 2; }
export EZFS=${EZFS:-$root/target/release/ezfs}
[[ -x $EZFS ]] || (cd "$root" && cargo build --release)
if [[ -n $QUICK ]]; then SIZE=256M RUNTIME=5; else SIZE=1G RUNTIME=15; fi

W=$(mktemp -d "$WORKDIR/ezfs-bench-shared.XXXXXX")
mounts=() volume=
cleanup() {
    set +e
    for m in "${mounts[@]}"; do fusermount3 -u "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done
    if [[ -n $volume ]]; then
        gluster --mode=script volume stop "$volume" force >/dev/null 2>&1
        gluster --mode=script volume delete "$volume" >/dev/null 2>&1
    fi
    rm -rf "$W"
}
trap cleanup EXIT
head -c 24 /dev/urandom | base64 >"$W/pass"

echo "## 1. fio jobs: a --shared-storage mount against a normal mount ($PASSES passes)"
"$here/bench.sh" $QUICK --passes "$PASSES" --workdir "$WORKDIR" --targets "ezfs-shared ezfs" --ratio-of ezfs-shared

echo
echo "## 2. 4 KiB random writes to one file: two shared mounts at once, and one alone"
b=$W/two/backing
mkdir -p "$b" "$W/two/m1" "$W/two/m2"
"$EZFS" init "$b" --passphrase-file "$W/pass" >/dev/null
"$EZFS" key create bench --backing "$b" --passphrase-file "$W/pass" >/dev/null
for m in m1 m2; do
    "$EZFS" mount --shared-storage "$b" "$W/two/$m" --passphrase-file "$W/pass" 2>/dev/null
    mounts+=("$W/two/$m")
done
mkdir "$W/two/m1/zone"
"$EZFS" zone create --key bench "$W/two/m1/zone" >/dev/null
fio --name=fill --directory="$W/two/m1/zone" --filename=rw.dat --rw=write --bs=1M --size="$SIZE" \
    --end_fsync=1 --output=/dev/null
randwrite() {  # DIR -> IOPS of a RUNTIME-long 4 KiB random write job on rw.dat
    fio --output-format=json --name=rw --directory="$1" --filename=rw.dat --rw=randwrite --bs=4k \
        --size="$SIZE" --ioengine=psync --time_based=1 --runtime="$RUNTIME" --end_fsync=1 |
        python3 -c 'import json,sys; t=sys.stdin.read(); print(json.loads(t[t.index("{"):])["jobs"][0]["write"]["iops"])'
}
for ((p = 1; p <= PASSES; p++)); do
    sync; echo 3 >/proc/sys/vm/drop_caches
    alone=$(randwrite "$W/two/m1/zone")
    sync; echo 3 >/proc/sys/vm/drop_caches
    randwrite "$W/two/m1/zone" >"$W/a" & randwrite "$W/two/m2/zone" >"$W/b"; wait
    echo "pass $p: one mount $alone IOPS; two mounts at once $(cat "$W/a") + $(cat "$W/b") IOPS"
    echo "$alone $(cat "$W/a") $(cat "$W/b")" >>"$W/two.txt"
done
python3 - "$W/two.txt" <<'PY'
import statistics, sys
rows = [[float(x) for x in l.split()] for l in open(sys.argv[1])]
one, two = [r[0] for r in rows], [r[1] + r[2] for r in rows]
sp = lambda xs: f"{statistics.median(xs):,.0f} ({min(xs):,.0f}–{max(xs):,.0f})"
print(f"one shared mount: {sp(one)} IOPS; two shared mounts at once, together: {sp(two)} IOPS "
      f"({len(rows)} passes, medians (range))")
PY
for m in "${mounts[@]}"; do fusermount3 -u "$m"; done
mounts=()

if [[ -n $GLUSTER ]]; then
    echo
    echo "## 3. GlusterFS: ezfs --shared-storage on a Gluster client against the plain Gluster mount"
    pgrep -x glusterd >/dev/null || glusterd
    host=$(hostname)
    volume=ezfsbench$$
    mkdir -p "$W/bricks/b1" "$W/bricks/b2" "$W/client"
    gluster --mode=script volume create "$volume" replica 2 "$host:$W/bricks/b1" "$host:$W/bricks/b2" force >/dev/null
    for o in write-behind quick-read open-behind stat-prefetch io-cache read-ahead readdir-ahead; do
        gluster --mode=script volume set "$volume" "performance.$o" off >/dev/null
    done
    gluster --mode=script volume start "$volume" >/dev/null
    mount -t glusterfs -o entry-timeout=0,attribute-timeout=0,negative-timeout=0 "$host:/$volume" "$W/client"
    mounts+=("$W/client")
    "$here/bench.sh" $QUICK --passes "$PASSES" --workdir "$W/client" --targets "ezfs-shared plain" \
        --ratio-of ezfs-shared
fi
