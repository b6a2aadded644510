#!/usr/bin/env bash
# zone-demo.sh: a walk through ezfs encryption zones that checks every zone rule.
#
# It makes a throw-away backing dir and mount under a temporary directory, a key
# per zone, two zones, a nested zone, a zone that encrypts file names and a plain
# directory, then runs the real
# commands (ezfs, mv, ln, cat, hexdump, rmdir) and checks each outcome. It exits
# non-zero if any rule does not hold, always unmounts, and removes what it made.
# No terminal is needed: the passphrase comes from a file (EZFS_PASSPHRASE_FILE).
#
# Usage: scripts/zone-demo.sh
#   EZFS=path/to/ezfs   the binary (default target/release/ezfs, then target/debug/ezfs;
#                       built with `cargo build --release` when neither exists)
#   EZFS_DEMO_TIMEOUT   seconds any one command may take (default 30)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEADLINE=${EZFS_DEMO_TIMEOUT:-30}

# ---- the binary ---------------------------------------------------------------
if [[ -n ${EZFS:-} ]]; then
    EZFS_BIN=$EZFS
    [[ $EZFS_BIN == /* ]] || EZFS_BIN=$PWD/$EZFS_BIN
elif [[ -x $ROOT/target/release/ezfs ]]; then
    EZFS_BIN=$ROOT/target/release/ezfs
elif [[ -x $ROOT/target/debug/ezfs ]]; then
    EZFS_BIN=$ROOT/target/debug/ezfs
else
    echo "zone-demo: no ezfs binary yet; building it (cargo build --release)"
    (cd "$ROOT" && cargo build --release)
    EZFS_BIN=$ROOT/target/release/ezfs
fi
if [[ ! -x $EZFS_BIN ]]; then
    echo "zone-demo: $EZFS_BIN is not an executable ezfs binary" >&2
    exit 2
fi

# ---- output and checks --------------------------------------------------------
if [[ -t 1 ]]; then
    B=$'\e[1m' G=$'\e[32m' R=$'\e[31m' N=$'\e[0m'
else
    B='' G='' R='' N=''
fi
PASS=0
FAIL=0
FAILED=()
STEP=0

section() { printf '\n%s== %s ==%s\n' "$B" "$*" "$N"; }
say() { printf '%s\n' "$*"; }

# check DESCRIPTION COMMAND...: runs a test command (quietly) and records the result.
check() {
    local what=$1
    shift
    if "$@"; then
        PASS=$((PASS + 1))
        printf '  %s[PASS]%s %s\n' "$G" "$N" "$what"
    else
        FAIL=$((FAIL + 1))
        FAILED+=("$what")
        printf '  %s[FAIL]%s %s\n' "$R" "$N" "$what"
    fi
}

# run COMMAND...: prints the command, runs it with a deadline (a hung filesystem must
# not hang the demo), shows its output indented. Sets RC (124: no answer in time) and
# OUT (a file with its stdout and stderr).
RC=0
OUT=
run() {
    local shown=() a pid ticks=0
    for a in "$@"; do
        if [[ $a =~ [^A-Za-z0-9_./@:=,+-] ]]; then shown+=("'$a'"); else shown+=("$a"); fi
    done
    printf '%s$ %s%s\n' "$B" "${shown[*]}" "$N"
    STEP=$((STEP + 1))
    OUT=$LOGS/$STEP.out
    : >"$OUT"
    # "ezfs" is the binary under test; the command runs as the background process
    # itself (no shell in between), so the deadline's kill reaches it. Output is
    # appended: the mount daemon shares the file with `ezfs mount`.
    if [[ $1 == ezfs ]]; then
        "$EZFS_BIN" "${@:2}" >>"$OUT" 2>&1 </dev/null &
    else
        "$@" >>"$OUT" 2>&1 </dev/null &
    fi
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        if ((ticks >= DEADLINE * 20)); then
            kill -TERM "$pid" 2>/dev/null || true
            echo "(no answer after ${DEADLINE}s: gave up on it)" >>"$OUT"
            RC=124
            sed 's/^/    /' "$OUT"
            return 0
        fi
        sleep 0.05
        ticks=$((ticks + 1))
    done
    RC=0
    wait "$pid" || RC=$?
    sed 's/^/    /' "$OUT"
}

# Helpers for checks (each returns success when the expectation holds).
rc_is() { [[ $RC -eq $1 ]]; }
out_has() { grep -qF -- "$1" "$OUT"; }
out_lacks() { ! grep -qF -- "$1" "$OUT"; }
out_matches() { grep -qE -- "$1" "$OUT"; }
field() { awk -v k="$1" 'index($0, k ":") == 1 { sub(/^[^:]*:[ \t]*/, ""); print; exit }' "$OUT"; }
same_text() { [[ $1 == "$2" ]]; }
differ() { [[ -n $1 && -n $2 && $1 != "$2" ]]; }
no_plaintext_in() { ! grep -qF -- "$1" "$2"; }
has_magic() { [[ $(head -c 7 "$1") == EZFSENC ]]; }
size_is() { [[ $(stat -c %s "$1") -eq $2 ]]; }
gone() { [[ ! -e $1 ]]; }
mounted() { awk -v m="$1" '$5 == m { found = 1 } END { exit !found }' /proc/self/mountinfo; }
not_mounted() { ! mounted "$1"; }

# ---- a temporary world ----------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ezfs-demo.XXXXXX")
WORK=$(cd "$WORK" && pwd -P) # as /proc/self/mountinfo will name it
LOGS=$WORK/logs
mkdir "$LOGS"
BACK=$WORK/backing
MNT=$WORK/mnt
mkdir "$MNT"
export EZFS_PASSPHRASE_FILE=$WORK/passphrase
(umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$EZFS_PASSPHRASE_FILE")
DAEMON_LOG=

# The mount daemon of this demo: an `ezfs mount` process whose working directory is ours.
daemon_pids() {
    local d
    for d in /proc/[0-9]*; do
        [[ $(readlink "$d/cwd" 2>/dev/null) == "$WORK" ]] || continue
        tr '\0' '\n' <"$d/cmdline" 2>/dev/null | sed -n 2p | grep -qx mount || continue
        echo "${d#/proc/}"
    done
}

cleanup() {
    local status=$? pid i
    set +e
    cd /
    if mounted "$MNT"; then
        echo
        echo "zone-demo: unmounting $MNT"
        # in the background: a stuck filesystem must not stop the cleanup
        "$EZFS_BIN" umount "$MNT" >/dev/null 2>&1 &
        pid=$!
        for ((i = 0; i < 300; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if mounted "$MNT"; then
            fusermount3 -u -z "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null
        fi
    fi
    # the daemon exits once unmounted; one that does not is stuck: end it, which also
    # releases any process still waiting on the mount
    for ((i = 0; i < 50; i++)); do [[ -z $(daemon_pids) ]] && break; sleep 0.1; done
    for pid in $(daemon_pids); do
        echo "zone-demo: the mount daemon (pid $pid) did not exit after unmounting; killing it"
        kill -KILL "$pid" 2>/dev/null
    done
    if mounted "$MNT"; then
        echo "zone-demo: $MNT is still mounted; leaving $WORK in place" >&2
    else
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cd "$WORK"
section "Setup in $WORK"
say "ezfs:       $EZFS_BIN"
say "backing:    $BACK (what is stored on disk)"
say "mount:      $MNT (what users see)"
say "passphrase: a random one in $EZFS_PASSPHRASE_FILE, given to ezfs by EZFS_PASSPHRASE_FILE"

die_setup() {
    echo "zone-demo: setup failed ($1); cannot go on" >&2
    FAIL=$((FAIL + 1))
    exit 1
}

run ezfs init backing
rc_is 0 || die_setup "ezfs init"
run ezfs key create key-a --backing backing
rc_is 0 || die_setup "key create"
run ezfs key create key-b --backing backing
rc_is 0 || die_setup "key create"
run ezfs mount backing mnt
DAEMON_LOG=$OUT
if ! rc_is 0 || ! mounted "$MNT"; then die_setup "ezfs mount"; fi
run mkdir mnt/zone-a mnt/zone-b mnt/plain
rc_is 0 || die_setup "mkdir"

# ---------------------------------------------------------------------------------
section "1. Zones are made from empty directories inside the mount"
run ezfs zone create --key key-a mnt/zone-a
check "zone create on an empty directory succeeds (zone-a, key key-a)" rc_is 0
run ezfs zone create --key key-b mnt/zone-b
check "zone create on an empty directory succeeds (zone-b, key key-b)" rc_is 0

say "A key made while the backing dir is mounted can be used at once:"
run ezfs key create key-inner --backing backing
check "key create works while mounted" rc_is 0
run mkdir mnt/zone-a/inner
run ezfs zone create --key key-inner mnt/zone-a/inner
check "zone create inside a zone is allowed (nested zone zone-a/inner)" rc_is 0

run ezfs zone list mnt
check "zone list shows zone-a with key-a" out_matches "/zone-a +key-a@1"
check "zone list shows zone-b with key-b" out_matches "/zone-b +key-b@1"
check "zone list shows the nested zone zone-a/inner with key-inner" out_matches "/zone-a/inner +key-inner@1"

# ---------------------------------------------------------------------------------
section "2. Plaintext through the mount, ciphertext on disk"
SECRET="launch code 7731-CORAL, a zone-a secret"
say "\$ echo '$SECRET' > mnt/zone-a/report.txt"
echo "$SECRET" >mnt/zone-a/report.txt
run cat mnt/zone-a/report.txt
check "cat through the mount reads the plaintext" same_text "$(cat "$OUT")" "$SECRET"
say "The same file in the backing dir: a 4 KiB header (magic, ids, key name, EDEK), then ciphertext."
say "\$ hexdump -C backing/zone-a/report.txt | head -n 8"
hexdump -C backing/zone-a/report.txt | head -n 8 | sed 's/^/    /'
say "\$ hexdump -C -s 8192 backing/zone-a/report.txt   # the encrypted data block"
hexdump -C -s 8192 backing/zone-a/report.txt | sed 's/^/    /'
check "the backing file starts with the ezfs header magic EZFSENC" has_magic backing/zone-a/report.txt
check "the backing file does not contain the plaintext" no_plaintext_in "$SECRET" backing/zone-a/report.txt
check "the backing size is header + metadata block + plaintext size (sizes are visible)" \
    size_is backing/zone-a/report.txt $((8192 + ${#SECRET} + 1))

say "A multi-block binary file round-trips:"
head -c 300000 /dev/urandom >"$WORK/random.bin"
run cp "$WORK/random.bin" mnt/zone-a/random.bin
run cmp "$WORK/random.bin" mnt/zone-a/random.bin
check "300000 random bytes read back identical through the mount" rc_is 0
run cmp -s "$WORK/random.bin" backing/zone-a/random.bin
check "... and differ from what is stored in the backing dir" rc_is 1

say "A file in the nested zone uses the nested zone's key:"
say "\$ echo 'inner plan' > mnt/zone-a/inner/plan.txt"
echo "inner plan" >mnt/zone-a/inner/plan.txt
run ezfs zone info mnt/zone-a/inner/plan.txt
check "zone info of zone-a/inner/plan.txt names key-inner@1" same_text "$(field key)" "key-inner@1"
run ezfs zone info mnt/zone-a/report.txt
check "zone info of zone-a/report.txt names key-a@1" same_text "$(field key)" "key-a@1"

# ---------------------------------------------------------------------------------
section "3. Files outside zones are stored as written"
say "\$ echo 'public notes' > mnt/plain/notes.txt"
echo "public notes" >mnt/plain/notes.txt
run cmp backing/plain/notes.txt mnt/plain/notes.txt
check "backing/plain/notes.txt is byte-identical to mnt/plain/notes.txt" rc_is 0
run ezfs zone info mnt/plain/notes.txt
check "zone info says a plain file is not in a zone (exit 1)" rc_is 1

# ---------------------------------------------------------------------------------
section "4. mv across a zone boundary re-encrypts under the destination's key"
run ezfs zone info mnt/zone-a/report.txt
KEY_BEFORE=$(field key)
ID_BEFORE=$(field "file id")
run mv mnt/zone-a/report.txt mnt/zone-b/
check "mv zone-a/report.txt zone-b/ succeeds (rename gets EXDEV; mv copies)" rc_is 0
run ezfs zone info mnt/zone-b/report.txt
KEY_AFTER=$(field key)
ID_AFTER=$(field "file id")
check "the key changed from key-a@1 to key-b@1" \
    same_text "$KEY_BEFORE -> $KEY_AFTER" "key-a@1 -> key-b@1"
check "the file got a new file id (and a new DEK): it was rewritten" differ "$ID_BEFORE" "$ID_AFTER"
run cat mnt/zone-b/report.txt
check "the moved file reads the same plaintext" same_text "$(cat "$OUT")" "$SECRET"
check "the source is gone from zone-a (backing dir)" gone backing/zone-a/report.txt
check "zone-b's backing file holds no plaintext" no_plaintext_in "$SECRET" backing/zone-b/report.txt

say "plain -> zone encrypts, zone -> plain decrypts:"
run mv mnt/plain/notes.txt mnt/zone-b/
check "mv plain/notes.txt zone-b/ succeeds" rc_is 0
check "... and it is now encrypted in the backing dir" has_magic backing/zone-b/notes.txt
run mv mnt/zone-b/notes.txt mnt/plain/
check "mv zone-b/notes.txt plain/ succeeds" rc_is 0
run cmp backing/plain/notes.txt mnt/plain/notes.txt
check "... and it is stored as plaintext again" rc_is 0

say "A directory tree moves across zones the same way:"
run mkdir -p mnt/zone-a/docs/2024
say "\$ echo 'minutes' > mnt/zone-a/docs/2024/minutes.txt"
echo "minutes" >mnt/zone-a/docs/2024/minutes.txt
run mv mnt/zone-a/docs mnt/zone-b/
check "mv of a directory from zone-a to zone-b succeeds" rc_is 0
run ezfs zone info mnt/zone-b/docs/2024/minutes.txt
check "files inside it now use key-b@1" same_text "$(field key)" "key-b@1"

# ---------------------------------------------------------------------------------
section "5. Renames inside one zone are plain renames"
run ezfs zone info mnt/zone-b/report.txt
ID_BEFORE=$(field "file id")
run mv mnt/zone-b/report.txt mnt/zone-b/report-2024.txt
check "mv within zone-b succeeds" rc_is 0
run ezfs zone info mnt/zone-b/report-2024.txt
check "... and keeps the file id (nothing re-encrypted)" same_text "$(field "file id")" "$ID_BEFORE"

say "A nested zone root can be renamed within its parent zone:"
run mv mnt/zone-a/inner mnt/zone-a/inner2
check "mv zone-a/inner zone-a/inner2 succeeds" rc_is 0
run ezfs zone list mnt
check "zone list shows the nested zone at its new path" out_matches "/zone-a/inner2 +key-inner@1"
run cat mnt/zone-a/inner2/plan.txt
check "its files still read back" same_text "$(cat "$OUT")" "inner plan"

# ---------------------------------------------------------------------------------
section "6. Hard links cannot cross a zone boundary"
run ln mnt/zone-b/report-2024.txt mnt/zone-a/report-link.txt
check "ln zone-b -> zone-a fails" rc_is 1
check "... with EXDEV (Invalid cross-device link)" out_has "Invalid cross-device link"
run ln mnt/zone-b/report-2024.txt mnt/plain/report-link.txt
check "ln zone-b -> plain fails with EXDEV" out_has "Invalid cross-device link"
run ln mnt/zone-b/report-2024.txt mnt/zone-b/report-link.txt
check "ln within zone-b works" rc_is 0
run cat mnt/zone-b/report-link.txt
check "... and the link reads the plaintext" same_text "$(cat "$OUT")" "$SECRET"

# ---------------------------------------------------------------------------------
section "7. zone create is refused where it cannot be honoured"
run mkdir mnt/plain/full
run touch mnt/plain/full/existing.txt
run ezfs zone create --key key-a mnt/plain/full
check "zone create on a non-empty directory is refused (exit 1)" rc_is 1
check "... with a clear message" out_has "not empty"
run ezfs zone create --key key-a mnt/plain/missing
check "zone create on a missing directory is refused (exit 1)" rc_is 1
run ezfs zone create --key key-b mnt/zone-b
check "zone create on an existing zone is refused (exit 1)" rc_is 1
check "... with a clear message" out_has "already an encryption zone"

# ---------------------------------------------------------------------------------
section "8. Keys in use cannot be deleted; rmdir of an empty zone root removes the zone"
run ezfs key list --backing backing
run ezfs key delete key-inner --backing backing
check "key delete of a key a zone uses is refused (exit 1)" rc_is 1
check "... naming the zone that uses it" out_has "inner2"
run ezfs key list --backing backing --json
check "key-inner still exists" out_has '"name": "key-inner"'
run rmdir mnt/zone-a/inner2
check "rmdir of a non-empty zone root fails" rc_is 1
run rm mnt/zone-a/inner2/plan.txt
run rmdir mnt/zone-a/inner2
check "rmdir of the now empty zone root succeeds" rc_is 0
check "the zone root is gone from the backing dir, marker included" gone backing/zone-a/inner2
run ezfs zone list mnt
check "zone list no longer shows zone-a/inner2" out_lacks "inner2"
run ezfs key delete key-inner --backing backing
check "now key delete key-inner succeeds" rc_is 0
run ezfs key list --backing backing
check "key list shows key-a used by zone-a" out_matches "^key-a .*/zone-a"
check "key list shows key-b used by zone-b" out_matches "^key-b .*/zone-b"
check "key list no longer shows key-inner" out_lacks "key-inner"

# ---------------------------------------------------------------------------------
section "9. The zone marker and .ezfs are invisible and reserved in the mount"
run ls -a mnt mnt/zone-a
check "neither .ezfs nor .ezfs-zone is listed" out_lacks ".ezfs"
run ls -a backing/zone-a
check "the backing dir has the marker backing/zone-a/.ezfs-zone" out_has ".ezfs-zone"
run touch mnt/zone-a/.ezfs-zone
check "creating .ezfs-zone through the mount is refused" rc_is 1

# ---------------------------------------------------------------------------------
section "10. An unknown key name is refused"
run mkdir mnt/plain/typo
run ezfs zone create --key no-such-key mnt/plain/typo
check "zone create --key no-such-key is refused (exit 1)" rc_is 1
check "... with a message naming the key" out_has "no-such-key"
run ls mnt/zone-b
check "the mount still answers afterwards" rc_is 0

# ---------------------------------------------------------------------------------
section "11. Key lifecycle: roll, re-encrypt the zone, prune the old version"
printf '%s' "$SECRET" >mnt/zone-a/ledger.txt
run ezfs zone info mnt/zone-a/ledger.txt
EDEK_BEFORE=$(field EDEK)
FILEID_BEFORE=$(field "file id")
run ezfs key roll key-a --backing backing
check "key roll key-a makes version 2" out_has "key-a@2"
run ezfs key prune key-a --backing backing
check "key prune is refused while files still use key-a@1" rc_is 1
check "... naming one of those files" out_has "zone-a/"
run ezfs zone reencrypt mnt/zone-a
check "zone reencrypt zone-a succeeds" rc_is 0
check "... and reports the files it re-wrapped to key-a@2" out_matches "re-wrapped to key-a@2"
run ezfs zone info mnt/zone-a/ledger.txt
check "ledger.txt now names key-a@2" same_text "$(field key)" "key-a@2"
check "... with a new EDEK" differ "$(field EDEK)" "$EDEK_BEFORE"
check "... and the same file id (data untouched)" same_text "$(field "file id")" "$FILEID_BEFORE"
run cat mnt/zone-a/ledger.txt
check "ledger.txt still reads back the same plaintext" same_text "$(cat "$OUT")" "$SECRET"
run ezfs zone info mnt/zone-b/report-2024.txt
check "zone-b's files keep their own key (key-b@1)" same_text "$(field key)" "key-b@1"
run ezfs zone reencrypt --status mnt/zone-a
check "zone reencrypt --status shows zone-a completed on key-a@2" out_matches "zone-a +completed +key-a@2"
run ezfs key prune key-a --backing backing
check "key prune now drops key-a@1" out_has "pruned key-a@1"
run ezfs key list --backing backing
check "key list shows every key-a file on @2" out_matches "^key-a +@2 +@2:[0-9]+ "

# ---------------------------------------------------------------------------------
section "12. A zone that encrypts file names: the backing dir shows no name"
run ezfs key create key-names --backing backing
run mkdir mnt/medical
run ezfs zone create --key key-names --encrypt-names mnt/medical
check "zone create --encrypt-names succeeds" rc_is 0
check "... and says names are encrypted" out_has "file names encrypted"
printf 'biopsy: benign\n' >mnt/medical/2026-biopsy-results-jane-doe.pdf
mkdir mnt/medical/patients
printf 'allergies: none\n' >mnt/medical/patients/john-smith.txt
ln -s 2026-biopsy-results-jane-doe.pdf mnt/medical/latest-result
run ls -la mnt/medical mnt/medical/patients
check "the mount shows the names" out_has "2026-biopsy-results-jane-doe.pdf"
check "... and the symlink's target" out_has "latest-result -> 2026-biopsy-results-jane-doe.pdf"
run ls -laR backing/medical
check "the backing dir shows no name" out_lacks "jane-doe"
check "... not even in a subdirectory" out_lacks "john-smith"
check "... every directory has its IV file" out_has ".ezfs-diriv"
run find backing/medical -type l -printf '%f -> %l\n'
check "the symlink's target is ciphertext in the backing dir" out_lacks "biopsy"
run cat mnt/medical/latest-result
check "the symlink reads through to the file" out_has "biopsy: benign"
run mv mnt/medical/patients mnt/medical/records
check "a directory rename works (its children keep their backing names)" rc_is 0
run cat mnt/medical/records/john-smith.txt
check "... and its files read back" out_has "allergies: none"
run ezfs zone list mnt
check "zone list shows the zone's names as encrypted" out_matches "/medical +key-names@1 +encrypted"

# ---------------------------------------------------------------------------------
section "Unmount"
run ezfs umount mnt
check "ezfs umount succeeds" rc_is 0
check "the mount is gone" not_mounted "$MNT"

section "Result"
echo "$PASS checks passed, $FAIL failed"
if ((FAIL > 0)); then
    for f in "${FAILED[@]}"; do echo "  failed: $f"; done
    if [[ -n $DAEMON_LOG && -s $DAEMON_LOG ]]; then
        echo "mount daemon log (last lines):"
        tail -n 20 "$DAEMON_LOG" | sed 's/^/    /'
    fi
    exit 1
fi
echo "every zone rule holds"
