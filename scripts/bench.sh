#!/usr/bin/env bash
# bench.sh — run ezfs's fio jobs (scripts/fio/*.fio) on an ezfs zone and, for
# comparison, on a plain directory of the same disk and on gocryptfs when it is
# installed; print MB/s or IOPS per job and the ratios.
#
# Usage: scripts/bench.sh [--quick] [--size SIZE] [--runtime SECS] [--workdir DIR]
#                         [--targets "ezfs plain gocryptfs"] [--jobs "seqwrite ..."]
#   --quick     256M file, 5 s per timed job (about one minute per target)
#   defaults    1G file, 15 s per timed job
#   targets     ezfs (a zone), ezfs-plain (a plain directory of an ezfs mount), plain
#               (the disk itself), gocryptfs
# Environment: EZFS (the ezfs binary; default target/release/ezfs, built if missing),
#              EZFS_MOUNT_OPTS (more `ezfs mount` arguments, e.g. "--passthrough")
# Run as root so that caches can be dropped before every job (reads start cold).
# Each target starts once the disk has settled (sync, then up to 60 s until it is idle).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
SIZE=1G RUNTIME=15 WORKDIR=/var/tmp
TARGETS="ezfs plain gocryptfs"
JOBS="seqwrite seqread randread4k randwrite4k randrw-4jobs smallfiles"
while [[ $# -gt 0 ]]; do
    case $1 in
        --quick) SIZE=256M RUNTIME=5; shift ;;
        --size) SIZE=$2; shift 2 ;;
        --runtime) RUNTIME=$2; shift 2 ;;
        --workdir) WORKDIR=$2; shift 2 ;;
        --targets) TARGETS=$2; shift 2 ;;
        --jobs) JOBS=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
command -v fio >/dev/null || { echo "bench.sh: fio is missing (apt-get install fio)" >&2; exit 1; }
EZFS=${EZFS:-$root/target/release/ezfs}
if [[ ! -x $EZFS ]]; then (cd "$root" && cargo build --release -q); fi
export SIZE RUNTIME

work=$(mktemp -d "$WORKDIR/ezfs-bench.XXXXXX")
mounts=()
cleanup() {
    for m in "${mounts[@]}"; do fusermount3 -u "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
head -c 32 /dev/urandom | base64 > "$work/pass"

setup() {  # TARGET -> sets DIR, the directory to run the jobs in
    local t=$1 d=$work/$1
    mkdir -p "$d/backing" "$d/mnt"
    case $t in
        plain) DIR=$d/backing ;;
        ezfs|ezfs-plain)
            "$EZFS" init "$d/backing" --passphrase-file "$work/pass" >/dev/null
            "$EZFS" key create bench --backing "$d/backing" --passphrase-file "$work/pass" >/dev/null
            # shellcheck disable=SC2086
            "$EZFS" mount "$d/backing" "$d/mnt" --passphrase-file "$work/pass" ${EZFS_MOUNT_OPTS:-} >/dev/null 2>"$d/log"
            mounts+=("$d/mnt")
            mkdir "$d/mnt/zone"
            if [[ $t == ezfs ]]; then
                "$EZFS" zone create --key bench "$d/mnt/zone" >/dev/null
            fi
            DIR=$d/mnt/zone ;;
        gocryptfs)
            gocryptfs -init -q -passfile "$work/pass" "$d/backing" >/dev/null
            gocryptfs -q -passfile "$work/pass" "$d/backing" "$d/mnt"
            mounts+=("$d/mnt")
            DIR=$d/mnt ;;
        *) echo "bench.sh: unknown target $t" >&2; return 1 ;;
    esac
}

# Waits (at most 60 s) until the workdir's disk has been nearly idle for 2 s in a row:
# a disk mounted with `discard` is still trimming the files of whatever ran before,
# which would slow down only the target that happens to come first.
settle() {
    sync
    local dev stat busy0 busy1 quiet=0
    dev=$(df --output=source "$WORKDIR" 2>/dev/null | tail -n 1)
    stat=/sys/class/block/${dev##*/}/stat
    [[ -r $stat ]] || { sleep 5; return; }
    busy0=$(awk '{print $10}' "$stat")   # ms the device was busy
    for _ in $(seq 60); do
        sleep 1
        busy1=$(awk '{print $10}' "$stat")
        if (( busy1 - busy0 < 100 )); then quiet=$((quiet + 1)); else quiet=0; fi
        busy0=$busy1
        (( quiet >= 2 )) && return
    done
}

results=$work/results
mkdir -p "$results"
for t in $TARGETS; do
    if [[ $t == gocryptfs ]] && ! command -v gocryptfs >/dev/null; then
        echo "bench.sh: gocryptfs not installed, skipping it" >&2; continue
    fi
    settle
    setup "$t"
    for j in $JOBS; do
        echo "bench.sh: $t $j" >&2
        # smallfiles runs its phases one by one: caches are dropped before create and stat
        sections=(""); [[ $j == smallfiles ]] && sections=(create stat read delete)
        for s in "${sections[@]}"; do
            [[ $s == read || $s == delete ]] || { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
            fio --output-format=json --directory="$DIR" ${s:+--section=$s} "$here/fio/$j.fio" \
                > "$results/$t.$j${s:+.$s}.json" 2>/dev/null || echo "bench.sh: fio failed for $t $j $s" >&2
        done
    done
done

python3 - "$results" "$TARGETS" "$JOBS" <<'PY'
import json, os, sys
res, targets, jobs = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
def load(name):
    try:
        with open(os.path.join(res, name + ".json")) as f:
            txt = f.read()
        return json.loads(txt[txt.index("{"):])["jobs"][0]
    except (OSError, ValueError, KeyError, IndexError):
        return None
def value(t, j):
    if j == "smallfiles":  # files over the summed time of the four phases
        phases = [load(f"{t}.{j}.{s}") for s in ("create", "stat", "read", "delete")]
        if None in phases or any(p["job_runtime"] <= 0 for p in phases):
            return None
        return phases[0]["write"]["total_ios"] / sum(p["job_runtime"] / 1e3 for p in phases)
    job = load(f"{t}.{j}")
    if job is None:
        return None
    if j.startswith("seq"):
        return (job["read"]["bw_bytes"] + job["write"]["bw_bytes"]) / 1e6
    return job["read"]["iops"] + job["write"]["iops"]
targets = [t for t in targets if any(value(t, j) is not None for j in jobs)]
unit = lambda j: "MB/s" if j.startswith("seq") else ("files/s" if j == "smallfiles" else "IOPS")
others = [t for t in targets if t != "ezfs"]
head = "| job | unit | " + " | ".join(targets) + " | " + " | ".join(f"ezfs/{o}" for o in others) + " |"
print(head)
print("|" + "---|" * (2 + len(targets) + len(others)))
for j in jobs:
    vals = {t: value(t, j) for t in targets}
    cells = [f"{vals[t]:,.0f}" if vals[t] is not None else "–" for t in targets]
    ratios = [f"{vals['ezfs'] / vals[o]:.2f}x" if vals.get("ezfs") and vals[o] else "–" for o in others]
    print(f"| {j} | {unit(j)} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
PY
