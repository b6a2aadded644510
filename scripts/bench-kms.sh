#!/usr/bin/env bash
# bench-kms.sh — what keeping zone keys in a KMIP key manager costs: the same jobs in a
# zone whose key is in the local keystore and in one whose key is in a PyKMIP server
# (scripts/kmip-server.sh), on two mounts side by side, in interleaved passes; prints
# each pass, the medians, the spread and the ratio kmip/local.
#
#   smallfiles  5,000 files of 4 KiB: create and write, stat, read, delete (one
#               process, files per second over the four steps). In the KMIP zone every
#               create takes a pre-wrapped DEK from the EDEK pool.
#   coldopen    open and read each of 5,000 existing 4 KiB files after drop_caches
#               (files per second): every open needs the file's DEK; in the KMIP zone
#               that is a KMS round trip, unless the DEK cache holds it (the files are
#               read once first, so a cache can fill)
#
# Targets: local (keystore), kmip (KMS, the defaults: a pool of 500, a 30 s DEK cache),
# kmip+pool (a pool as big as the job, --edek-pool 6000), kmip+nocache (--dek-cache-ttl
# 0), kmip+cache (--dek-cache-ttl 600). Before each smallfiles run the pool is let fill
# (as it does between bursts). smallfiles runs on all but kmip+cache, coldopen on
# local, kmip+nocache and kmip+cache.
# Usage: scripts/bench-kms.sh [--passes N] [--workdir DIR]   (root; python3-pykmip, openssl)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
PASSES=3 WORKDIR=/var/tmp
while [[ $# -gt 0 ]]; do
    case $1 in
        --passes) PASSES=$2; shift 2 ;;
        --workdir) WORKDIR=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench-kms.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[[ $(id -u) -eq 0 ]] || { echo "bench-kms.sh: run as root (drop_caches)" >&2; exit 2; }
EZFS=${EZFS:-$root/target/release/ezfs}
[[ -x $EZFS ]] || (cd "$root" && cargo build --release)

W=$(mktemp -d "$WORKDIR/ezfs-bench-kms.XXXXXX")
export EZFS_PASSPHRASE_FILE=$W/pass
head -c 24 /dev/urandom | base64 >"$EZFS_PASSPHRASE_FILE"
TARGETS="local kmip kmip+pool kmip+nocache kmip+cache"
mnt() { echo "$W/m-${1//+/-}"; }
cleanup() {
    for t in $TARGETS; do "$EZFS" umount "$(mnt "$t")" >/dev/null 2>&1 || true; done
    "$here/kmip-server.sh" stop "$W/kms" >/dev/null 2>&1 || true
    rm -rf "$W"
}
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
URL=$("$here/kmip-server.sh" start "$W/kms" "$port")
opts() {
    case $1 in
        kmip+pool) echo "--edek-pool 6000" ;;
        kmip+nocache) echo "--dek-cache-ttl 0" ;;
        kmip+cache) echo "--dek-cache-ttl 600" ;;
    esac
}
# a backing dir per target (one mount each); the KMIP ones share key k in the KMS
for t in $TARGETS; do
    b=$W/b-${t//+/-}
    mkdir -p "$b" "$(mnt "$t")"
    if [[ $t == local ]]; then
        "$EZFS" init "$b" --no-recovery-key >/dev/null
    else
        "$EZFS" init "$b" --no-recovery-key --key-provider "$URL" >/dev/null
    fi
    "$EZFS" key create k --backing "$b" >/dev/null
    # shellcheck disable=SC2046
    "$EZFS" mount $(opts "$t") "$b" "$(mnt "$t")" >/dev/null
    mkdir "$(mnt "$t")/z"
    "$EZFS" zone create --key k "$(mnt "$t")/z" >/dev/null
done
zdir() { echo "$(mnt "$1")/z"; }
cold() { sync; echo 3 >/proc/sys/vm/drop_caches; }

runs() { # job target: whether the job runs on the target
    case $1.$2 in
        smallfiles.kmip+cache | coldopen.kmip | coldopen.kmip+pool) return 1 ;;
    esac
}
# wait_pool T N: until mount T has N pre-wrapped keys (at most 3 minutes)
wait_pool() {
    local i n
    for ((i = 0; i < 360; i++)); do
        n=$("$EZFS" status --json "$(mnt "$1")" | python3 -c '
import json, sys
d = json.load(sys.stdin)
d = d[0] if isinstance(d, list) else d
k = (d.get("daemon") or {}).get("kms") or {}
print(k.get("pooled_edeks", 0))')
        ((n >= $2)) && return 0
        sleep 0.5
    done
    echo "bench-kms.sh: the pool of $1 did not fill ($n of $2)" >&2
}
# the 5,000 files of coldopen, made once per target
for t in $TARGETS; do
    runs coldopen "$t" || continue
    python3 - "$(zdir "$t")/cold" <<'PY'
import os, sys
d = sys.argv[1]; os.makedirs(d, exist_ok=True)
for i in range(5000):
    with open(os.path.join(d, "f%05d" % i), "wb") as f: f.write(b"c" * 4096)
PY
done

smallfiles() {
    python3 - "$1" <<'PY'
import os, sys, time
d = os.path.join(sys.argv[1], "small"); os.makedirs(d, exist_ok=True)
data = b"s" * 4096
names = [os.path.join(d, "small-file-%05d.dat" % i) for i in range(5000)]
t = time.monotonic()
for n in names:
    with open(n, "wb") as f: f.write(data)
for n in names: os.stat(n)
for n in names:
    with open(n, "rb") as f: f.read()
for n in names: os.unlink(n)
print("%.0f" % (4 * len(names) / (time.monotonic() - t)))
PY
}
readall() {
    python3 - "$1" <<'PY'
import os, sys, time
d = sys.argv[1]; names = sorted(os.listdir(d))
t = time.monotonic()
for n in names:
    with open(os.path.join(d, n), "rb") as f: f.read()
print("%.0f" % (len(names) / (time.monotonic() - t)))
PY
}
# coldopen T: read once (the DEK cache, if any, fills), drop the page cache, time a read
coldopen() { readall "$(zdir "$1")/cold" >/dev/null; cold; readall "$(zdir "$1")/cold"; }

declare -A R
printf '%-5s %-10s' pass job; for t in $TARGETS; do printf ' %11s' "$t"; done; echo
for ((p = 1; p <= PASSES; p++)); do
    for job in smallfiles coldopen; do
        printf '%-5s %-10s' "$p" "$job"
        order=$TARGETS
        ((p % 2 == 0)) && order=$(echo "$TARGETS" | tr ' ' '\n' | tac | tr '\n' ' ')
        for t in $order; do
            runs "$job" "$t" || { R[$job.$t]+="- "; continue; }
            # the pool refills between bursts
            if [[ $job == smallfiles && $t == kmip+pool ]]; then wait_pool "$t" 6000
            elif [[ $job == smallfiles && $t != local ]]; then wait_pool "$t" 500; fi
            cold
            if [[ $job == smallfiles ]]; then v=$(smallfiles "$(zdir "$t")"); else v=$(coldopen "$t"); fi
            R[$job.$t]+="$v "
        done
        for t in $TARGETS; do set -- ${R[$job.$t]}; printf ' %11s' "${!#}"; done; echo
    done
done

echo
echo "medians (min-max), per second; ratio = target / local:"
for job in smallfiles coldopen; do
    for t in $TARGETS; do
        runs "$job" "$t" || continue
        python3 - "$job" "$t" "${R[$job.local]}" "${R[$job.$t]}" <<'PY'
import statistics, sys
job, t = sys.argv[1], sys.argv[2]
lo, x = [float(v) for v in sys.argv[3].split()], [float(v) for v in sys.argv[4].split()]
ratios = [b / a for a, b in zip(lo, x)]
print("%-10s %-10s %8.0f (%.0f-%.0f)  ratio %.2f (per pass %.2f-%.2f)" % (
    job, t, statistics.median(x), min(x), max(x), statistics.median(x) / statistics.median(lo),
    min(ratios), max(ratios)))
PY
    done
done
