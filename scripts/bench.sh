#!/usr/bin/env bash
# bench.sh — run ezfs's fio jobs (scripts/fio/*.fio) on an ezfs zone, a plain directory
# of the same ezfs mount, the disk itself and gocryptfs when it is installed; print MB/s
# or IOPS per job (medians over the passes, with their range) and the ratios of ezfs
# to the others (medians of the per-pass ratios, with their range).
#
# Usage: scripts/bench.sh [--quick] [--passes N] [--out FILE] [--size SIZE]
#                         [--runtime SECS] [--workdir DIR]
#                         [--targets "ezfs ezfs-plain plain gocryptfs"] [--jobs "seqwrite ..."]
#                         [--ratio-of TARGET]
#   --quick     256M file, 5 s per timed job (about one minute per target and pass)
#   defaults    1G file, 15 s per timed job
#   --passes N  run every target N times (default 1); each pass rotates the order of
#               the targets, so that none always runs first
#   --out FILE  also write the table to FILE.md and a chart to FILE.svg: each target's
#               speed on each job as a ratio to the disk's (`plain`) in the same pass
#   targets     ezfs (a zone), ezfs-plain (a plain directory of an ezfs mount), plain
#               (the disk itself), gocryptfs, ezfs-shared (a zone of a mount made with
#               --shared-storage)
#   --ratio-of T  the ratio columns are T's speed over each other target's (default ezfs)
# Environment: EZFS (the ezfs binary; default target/release/ezfs, built if missing),
#              EZFS_MOUNT_OPTS (more `ezfs mount` arguments, e.g. "--passthrough")
# Run as root so that caches can be dropped before every job (reads start cold).
# Each target starts once the disk has settled (sync, then up to 60 s until it is idle).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
SIZE=1G RUNTIME=15 WORKDIR=/var/tmp
TARGETS="ezfs ezfs-plain plain gocryptfs"
JOBS="seqwrite seqread randread4k randwrite4k randrw-4jobs smallfiles"
PASSES=1 OUT= RATIO_OF=ezfs
while [[ $# -gt 0 ]]; do
    case $1 in
        --quick) SIZE=256M RUNTIME=5; shift ;;
        --size) SIZE=$2; shift 2 ;;
        --runtime) RUNTIME=$2; shift 2 ;;
        --workdir) WORKDIR=$2; shift 2 ;;
        --targets) TARGETS=$2; shift 2 ;;
        --jobs) JOBS=$2; shift 2 ;;
        --passes) PASSES=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --ratio-of) RATIO_OF=$2; shift 2 ;;
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
        ezfs|ezfs-plain|ezfs-shared)
            "$EZFS" init "$d/backing" --passphrase-file "$work/pass" >/dev/null
            "$EZFS" key create bench --backing "$d/backing" --passphrase-file "$work/pass" >/dev/null
            local shared=
            [[ $t == ezfs-shared ]] && shared=--shared-storage
            # shellcheck disable=SC2086
            "$EZFS" mount "$d/backing" "$d/mnt" --passphrase-file "$work/pass" $shared ${EZFS_MOUNT_OPTS:-} >/dev/null 2>"$d/log"
            mounts+=("$d/mnt")
            mkdir "$d/mnt/zone"
            if [[ $t != ezfs-plain ]]; then
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

if [[ " $TARGETS " == *" gocryptfs "* ]] && ! command -v gocryptfs >/dev/null; then
    echo "bench.sh: gocryptfs not installed, skipping it" >&2
    TARGETS=${TARGETS//gocryptfs/}
fi
read -r -a order <<<"$TARGETS"
for ((p = 1; p <= PASSES; p++)); do
    results=$work/results/$p
    mkdir -p "$results"
    for t in "${order[@]}"; do
        settle
        setup "$t"
        for j in $JOBS; do
            echo "bench.sh: pass $p: $t $j" >&2
            # smallfiles runs its phases one by one: caches are dropped before create and stat
            sections=(""); [[ $j == smallfiles ]] && sections=(create stat read delete)
            for s in "${sections[@]}"; do
                [[ $s == read || $s == delete ]] || { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
                fio --output-format=json --directory="$DIR" ${s:+--section=$s} "$here/fio/$j.fio" \
                    > "$results/$t.$j${s:+.$s}.json" 2>/dev/null || echo "bench.sh: fio failed for $t $j $s" >&2
            done
        done
        # each target starts from a fresh mount and an empty directory
        for m in "${mounts[@]}"; do fusermount3 -u "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
        mounts=()
        rm -rf "${work:?}/$t"
    done
    order=("${order[@]:1}" "${order[0]}")
done

python3 - "$work/results" "$TARGETS" "$JOBS" "$PASSES" "$OUT" "$RATIO_OF" <<'PY'
import json, os, statistics, sys
res, targets, jobs, passes, out, base = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), int(sys.argv[4]), sys.argv[5], sys.argv[6]
def load(p, name):
    try:
        with open(os.path.join(res, str(p), name + ".json")) as f:
            txt = f.read()
        return json.loads(txt[txt.index("{"):])["jobs"][0]
    except (OSError, ValueError, KeyError, IndexError):
        return None
def value1(p, t, j):
    load1 = lambda name: load(p, name)
    if j == "smallfiles":  # files over the summed time of the four phases
        phases = [load1(f"{t}.{j}.{s}") for s in ("create", "stat", "read", "delete")]
        if None in phases or any(x["job_runtime"] <= 0 for x in phases):
            return None
        return phases[0]["write"]["total_ios"] / sum(x["job_runtime"] / 1e3 for x in phases)
    job = load1(f"{t}.{j}")
    if job is None:
        return None
    if j.startswith("seq"):
        return (job["read"]["bw_bytes"] + job["write"]["bw_bytes"]) / 1e6
    return job["read"]["iops"] + job["write"]["iops"]
# per target and job, the value of each pass (None where it failed)
v = {(t, j): [value1(p, t, j) for p in range(1, passes + 1)] for t in targets for j in jobs}
targets = [t for t in targets if any(x is not None for j in jobs for x in v[(t, j)])]
def spread(xs, fmt):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "–"
    m = statistics.median(xs)
    return fmt(m) if len(xs) == 1 else f"{fmt(m)} ({fmt(min(xs))}–{fmt(max(xs))})"
def ratios(a, b, j):  # the per-pass ratios a/b
    return [x / y for x, y in zip(v[(a, j)], v[(b, j)]) if x and y]
unit = lambda j: "MB/s" if j.startswith("seq") else ("files/s" if j == "smallfiles" else "IOPS")
others = [t for t in targets if t != base] if base in targets else []
lines = ["| job | unit | " + " | ".join(targets) + " | " + " | ".join(f"{base}/{o}" for o in others) + " |",
         "|" + "---|" * (2 + len(targets) + len(others))]
for j in jobs:
    cells = [spread(v[(t, j)], lambda x: f"{x:,.0f}") for t in targets]
    rs = [spread(ratios(base, o, j), lambda x: f"{x:.2f}x") for o in others]
    lines.append(f"| {j} | {unit(j)} | " + " | ".join(cells) + " | " + " | ".join(rs) + " |")
note = f"{passes} pass(es); values are medians over the passes (range), ratios medians of the per-pass ratios (range)"
print("\n".join(lines))
print(note)
if out:
    with open(out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n\n" + note + "\n")
    # the chart: each target against the disk (`plain`) in the same pass, per job
    shown = [t for t in targets if t != "plain"]
    if "plain" in targets and shown:
        colors = ["#3b6ea5", "#7fb069", "#e08e45", "#b3589c", "#6c757d"]
        bw, gap, h, top, left = 18, 26, 260, 30, 50
        group = bw * len(shown) + gap
        w = left + group * len(jobs) + 20
        rmax = max([1.0] + [statistics.median(r) for t in shown for j in jobs if (r := ratios(t, "plain", j))])
        scale = (h - top) / (rmax * 1.1)
        y = lambda r: h - r * scale
        svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h + 70}" font-family="sans-serif" font-size="11">',
               f'<text x="{left}" y="16" font-size="13">speed as a ratio to the disk ({note.split(";")[0]}, medians)</text>',
               f'<line x1="{left}" y1="{y(1):.1f}" x2="{w - 10}" y2="{y(1):.1f}" stroke="#999" stroke-dasharray="4 3"/>',
               f'<text x="{left - 6}" y="{y(1) + 4:.1f}" text-anchor="end">1.0</text>',
               f'<line x1="{left}" y1="{h}" x2="{w - 10}" y2="{h}" stroke="#333"/>']
        for gi, j in enumerate(jobs):
            x0 = left + gi * group + gap / 2
            for ti, t in enumerate(shown):
                r = ratios(t, "plain", j)
                if not r:
                    continue
                m = statistics.median(r)
                x = x0 + ti * bw
                svg.append(f'<rect x="{x:.1f}" y="{y(m):.1f}" width="{bw - 2}" height="{h - y(m):.1f}" fill="{colors[ti % len(colors)]}"><title>{t} {j}: {m:.2f}x the disk</title></rect>')
                svg.append(f'<text x="{x + (bw - 2) / 2:.1f}" y="{y(m) - 3:.1f}" text-anchor="middle" font-size="9">{m:.2f}</text>')
            svg.append(f'<text x="{x0 + bw * len(shown) / 2:.1f}" y="{h + 14}" text-anchor="middle">{j}</text>')
        for ti, t in enumerate(shown):
            svg.append(f'<rect x="{left + ti * 110}" y="{h + 30}" width="10" height="10" fill="{colors[ti % len(colors)]}"/>')
            svg.append(f'<text x="{left + ti * 110 + 14}" y="{h + 39}">{t}</text>')
        svg.append("</svg>")
        with open(out + ".svg", "w") as f:
            f.write("\n".join(svg) + "\n")
PY
