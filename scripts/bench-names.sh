#!/usr/bin/env bash
# bench-names.sh — what encrypting file names costs: the same two jobs in a zone with
# plain names and in a zone that encrypts them (zone create --encrypt-names), side by
# side on one mount, in interleaved passes; prints each pass, the medians, the spread
# and the ratio encrypted/plain (of speeds: above 1 is faster).
#
#   smallfiles  5,000 files of 4 KiB: create and write, stat, read, delete (one
#               process, files per second over the four steps)
#   ls-lR       `ls -lR` of a tree of 10,000 entries (100 directories of 100 files)
#               with cold caches (drop_caches, and a remount), entries per second
#
# Usage: scripts/bench-names.sh [--passes N] [--workdir DIR]
#   --passes N   interleaved passes (default 5)
#   --workdir D  where the backing dir goes (default /var/tmp: the disk, not tmpfs)
# Environment: EZFS (the binary; default target/release/ezfs, built if missing).
# Run as root (drop_caches).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
PASSES=5 WORKDIR=/var/tmp
while [[ $# -gt 0 ]]; do
    case $1 in
        --passes) PASSES=$2; shift 2 ;;
        --workdir) WORKDIR=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench-names.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[[ $(id -u) -eq 0 ]] || { echo "bench-names.sh: run as root (drop_caches)" >&2; exit 2; }
EZFS=${EZFS:-$root/target/release/ezfs}
[[ -x $EZFS ]] || (cd "$root" && cargo build --release)
command -v python3 >/dev/null || { echo "bench-names.sh: python3 is missing" >&2; exit 1; }

W=$(mktemp -d "$WORKDIR/ezfs-bench-names.XXXXXX")
B=$W/backing M=$W/mnt
export EZFS_PASSPHRASE_FILE=$W/pass
head -c 24 /dev/urandom | base64 >"$EZFS_PASSPHRASE_FILE"
cleanup() {
    "$EZFS" umount "$M" >/dev/null 2>&1 || fusermount3 -uz "$M" 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT
mkdir -p "$B" "$M"
"$EZFS" init "$B" >/dev/null
"$EZFS" key create k --backing "$B" >/dev/null
"$EZFS" mount "$B" "$M" >/dev/null
mkdir "$M/plain" "$M/names"
"$EZFS" zone create --key k "$M/plain" >/dev/null
"$EZFS" zone create --key k --encrypt-names "$M/names" >/dev/null

remount() { "$EZFS" umount "$M" >/dev/null; "$EZFS" mount "$B" "$M" >/dev/null; }
cold() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# the 10,000-entry trees, made once
for z in plain names; do
    python3 - "$M/$z/tree" <<'EOF'
import os, sys
top = sys.argv[1]
for d in range(100):
    p = os.path.join(top, "directory-%03d" % d)
    os.makedirs(p)
    for f in range(100):
        with open(os.path.join(p, "file-number-%03d.txt" % f), "w") as fh:
            fh.write("x")
EOF
done

# smallfiles DIR: files per second over create+write, stat, read, delete
smallfiles() {
    python3 - "$1" <<'EOF'
import os, sys, time
d = os.path.join(sys.argv[1], "small")
os.makedirs(d, exist_ok=True)
data = b"s" * 4096
names = [os.path.join(d, "small-file-%05d.dat" % i) for i in range(5000)]
t = time.monotonic()
for n in names:
    with open(n, "wb") as f:
        f.write(data)
for n in names:
    os.stat(n)
for n in names:
    with open(n, "rb") as f:
        f.read()
for n in names:
    os.unlink(n)
print("%.0f" % (4 * len(names) / (time.monotonic() - t)))
EOF
}

# lslr DIR: entries per second of a cold ls -lR
lslr() {
    remount
    cold
    local t0 t1
    t0=$(date +%s.%N)
    ls -lR "$M/$1/tree" >/dev/null
    t1=$(date +%s.%N)
    python3 -c "print('%.0f' % (10100 / ($t1 - $t0)))"
}

declare -A R
printf '%-6s %-10s %12s %12s\n' pass job plain encrypted
for ((p = 1; p <= PASSES; p++)); do
    # alternate which zone goes first
    order="plain names"
    ((p % 2 == 0)) && order="names plain"
    for job in smallfiles lslr; do
        for z in $order; do
            cold
            if [[ $job == smallfiles ]]; then v=$(smallfiles "$M/$z"); else v=$(lslr "$z"); fi
            R[$job.$z]+="$v "
        done
        set -- ${R[$job.plain]}
        pl=${!#}
        set -- ${R[$job.names]}
        en=${!#}
        printf '%-6s %-10s %12s %12s\n' "$p" "$job" "$pl" "$en"
    done
done

echo
echo "medians (min-max), per second; ratio = encrypted / plain:"
for job in smallfiles lslr; do
    python3 - "$job" "${R[$job.plain]}" "${R[$job.names]}" <<'EOF'
import statistics, sys
job, pl, en = sys.argv[1], [float(x) for x in sys.argv[2].split()], [float(x) for x in sys.argv[3].split()]
ratios = [e / p for p, e in zip(pl, en)]
print("%-10s plain %8.0f (%.0f-%.0f)  encrypted %8.0f (%.0f-%.0f)  ratio %.2f (per pass %.2f-%.2f)" % (
    job, statistics.median(pl), min(pl), max(pl), statistics.median(en), min(en), max(en),
    statistics.median(en) / statistics.median(pl), min(ratios), max(ratios)))
EOF
done
