#!/usr/bin/env bash
# quickstart.sh: from a fresh machine with the Rust toolchain to a mounted ezfs with
# one encrypted directory.
#
#   scripts/quickstart.sh [BACKING [MOUNTPOINT]]
#
# Installs fuse3 when fusermount3 is missing (apt-get, as root), builds ezfs
# (cargo build --release), creates the backing dir with its keystore (ezfs init),
# a zone key "default", mounts the backing dir, and makes MOUNTPOINT/secret an
# encryption zone. Defaults: BACKING=$EZFS_HOME/backing, MOUNTPOINT=$EZFS_HOME/mnt,
# EZFS_HOME=$HOME/ezfs.
#
# The passphrase: EZFS_PASSPHRASE_FILE if set; else $EZFS_HOME/passphrase if it
# exists; else, on a terminal, ezfs prompts for it; without a terminal a random
# passphrase is written to $EZFS_HOME/passphrase (mode 0600).
#
# Running it again is safe: an initialized backing dir, an existing key, a live
# mount and an existing zone are left as they are.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
EZFS_HOME=${EZFS_HOME:-$HOME/ezfs}
BACKING=${1:-$EZFS_HOME/backing}
MNT=${2:-$EZFS_HOME/mnt}
KEY=default
ZONE_NAME=secret

say() { printf '==> %s\n' "$*"; }
die() {
    printf 'quickstart: %s\n' "$*" >&2
    exit 1
}
is_root() { [[ $(id -u) -eq 0 ]]; }
abspath() { realpath -m -- "$1"; }
mounted() { awk -v m="$1" '$5 == m { found = 1 } END { exit !found }' /proc/self/mountinfo; }

BACKING=$(abspath "$BACKING")
MNT=$(abspath "$MNT")
EZFS_HOME=$(abspath "$EZFS_HOME")

# ---- 1. FUSE ----------------------------------------------------------------------
if ! command -v fusermount3 >/dev/null 2>&1; then
    if is_root && command -v apt-get >/dev/null 2>&1; then
        say "installing fuse3 (apt-get)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update
        apt-get install -y fuse3
    else
        die "fusermount3 is missing: install the fuse3 package (e.g. 'sudo apt-get install fuse3'), then run this again"
    fi
fi
if [[ ! -e /dev/fuse ]]; then
    if is_root; then
        modprobe fuse 2>/dev/null || true
    fi
    [[ -e /dev/fuse ]] || die "/dev/fuse is missing: load the fuse kernel module ('sudo modprobe fuse')"
fi

# ---- 2. Build ----------------------------------------------------------------------
say "building ezfs (cargo build --release)"
(cd "$ROOT" && cargo build --release)
EZFS=${CARGO_TARGET_DIR:-$ROOT/target}/release/ezfs
[[ $EZFS == /* ]] || EZFS=$ROOT/$EZFS
[[ -x $EZFS ]] || die "the build did not produce $EZFS"

# ---- 3. Passphrase -----------------------------------------------------------------
mkdir -p "$EZFS_HOME"
PASSFILE=$EZFS_HOME/passphrase
INITIALIZED=false
[[ -f $BACKING/.ezfs/keystore.json ]] && INITIALIZED=true
if [[ -n ${EZFS_PASSPHRASE_FILE:-} ]]; then
    say "passphrase: from EZFS_PASSPHRASE_FILE=$EZFS_PASSPHRASE_FILE"
elif [[ -f $PASSFILE ]]; then
    export EZFS_PASSPHRASE_FILE=$PASSFILE
    say "passphrase: from $PASSFILE"
elif [[ -t 0 ]]; then
    say "passphrase: ezfs asks for it on this terminal (twice when it is set, then once per command)"
elif ! $INITIALIZED; then
    (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$PASSFILE" && echo >>"$PASSFILE")
    chmod 600 "$PASSFILE"
    export EZFS_PASSPHRASE_FILE=$PASSFILE
    say "passphrase: no terminal to ask on, so a random one was written to $PASSFILE (mode 0600)"
    say "            keep it: without it the encrypted files cannot be read"
else
    die "$BACKING is initialized but there is no terminal to ask for its passphrase: set EZFS_PASSPHRASE_FILE"
fi

# ---- 4. Backing dir, key, mount, zone ----------------------------------------------------
if $INITIALIZED; then
    say "$BACKING is already initialized; skipping ezfs init"
else
    say "ezfs init $BACKING (its recovery key goes to $EZFS_HOME/recovery-key, mode 0600)"
    "$EZFS" init "$BACKING" --recovery-key-file "$EZFS_HOME/recovery-key"
fi

KEYS=$("$EZFS" key list --backing "$BACKING" --json)
if grep -qF "\"name\": \"$KEY\"" <<<"$KEYS"; then
    say "key '$KEY' already exists; skipping ezfs key create"
else
    say "ezfs key create $KEY"
    "$EZFS" key create "$KEY" --backing "$BACKING"
fi

# a mount whose daemon died ("Transport endpoint is not connected") is cleared first
if mounted "$MNT" && ! stat "$MNT" >/dev/null 2>&1; then
    say "$MNT is a dead mount (its daemon is gone); clearing it with ezfs umount"
    "$EZFS" umount "$MNT" || fusermount3 -u -z "$MNT"
fi
mkdir -p "$MNT"
if mounted "$MNT"; then
    say "$MNT is already mounted; leaving it as it is"
else
    say "ezfs mount $BACKING $MNT"
    # the daemon logs to the stderr it inherits: give it a file, not this terminal
    if ! "$EZFS" mount "$BACKING" "$MNT" 2>"$EZFS_HOME/ezfs.log"; then
        cat "$EZFS_HOME/ezfs.log" >&2
        die "mount failed"
    fi
fi

ZONE=$MNT/$ZONE_NAME
ZONE_INFO=
if [[ -d $ZONE ]]; then
    ZONE_INFO=$("$EZFS" zone info --json "$ZONE" 2>/dev/null) || true
fi
if grep -qF "\"zone\": \"$ZONE\"" <<<"$ZONE_INFO"; then
    say "$ZONE is already an encryption zone"
else
    mkdir -p "$ZONE"
    say "ezfs zone create --key $KEY $ZONE"
    "$EZFS" zone create --key "$KEY" "$ZONE"
fi

# ---- 5. Where things are ------------------------------------------------------------
cat <<EOF

ezfs is mounted.
  encrypted directory: $ZONE
      files written here are encrypted on disk with key '$KEY'
  mount:               $MNT  (outside $ZONE_NAME/, files are stored as they are)
  backing dir:         $BACKING  (what is on disk; keystore in .ezfs/)
  recovery key:        $EZFS_HOME/recovery-key  (opens the keystore if the passphrase
                       is lost: keep a copy somewhere else, then delete this one)
  daemon log:          $EZFS_HOME/ezfs.log

Try it:
  echo "hello, ezfs" > $ZONE/hello.txt
  cat $ZONE/hello.txt                                  # plaintext through the mount
  hexdump -C $BACKING/$ZONE_NAME/hello.txt | head      # header + ciphertext on disk
  $EZFS zone info $ZONE/hello.txt      # key, EDEK, file id
  $EZFS zone list $MNT

Unmount:
  $EZFS umount $MNT        (or: fusermount3 -u $MNT)
Mount again later:
  $EZFS mount $BACKING $MNT
EOF
if [[ ${EZFS_PASSPHRASE_FILE:-} == "$PASSFILE" ]]; then
    echo "  (with EZFS_PASSPHRASE_FILE=$PASSFILE, or --passphrase-file $PASSFILE)"
fi
