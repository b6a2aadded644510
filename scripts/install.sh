#!/usr/bin/env bash
# install.sh — build ezfs and install it under PREFIX (default /usr/local):
#   PREFIX/bin/ezfs                         the command
#   /usr/sbin/mount.fuse.ezfs -> PREFIX/bin/ezfs
#                                           the mount(8) helper (mount -t fuse.ezfs, fstab);
#                                           mount(8) looks for helpers in /sbin only
#   PREFIX/share/man/man1/ezfs.1, man5/ezfs-format.5
#   PREFIX/share/bash-completion/completions/ezfs, zsh/site-functions/_ezfs,
#   fish/vendor_completions.d/ezfs.fish
#   /etc/systemd/system/ezfs@.service       (where systemd is present)
#
# Usage: scripts/install.sh [--prefix DIR] [--no-build] [--destdir DIR]
#   PREFIX=DIR scripts/install.sh            the same as --prefix
#   --destdir DIR   install under DIR (a staging root for packaging; nothing is run)
# Run as root for the default prefix. The daemon logs to the file its standard error
# names, else to BACKING/.ezfs/ezfs.log.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
PREFIX=${PREFIX:-/usr/local}
DESTDIR=""
BUILD=1
while [[ $# -gt 0 ]]; do
    case $1 in
        --prefix) PREFIX=$2; shift 2 ;;
        --destdir) DESTDIR=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [[ $BUILD == 1 ]]; then
    (cd "$root" && cargo build --release --locked)
fi
bin=${EZFS:-$root/target/release/ezfs}
[[ -x $bin ]] || { echo "install.sh: $bin is missing (build it, or drop --no-build)" >&2; exit 1; }

d=$DESTDIR
install -d "$d$PREFIX/bin" "$d$PREFIX/share/man/man1" "$d$PREFIX/share/man/man5" \
    "$d$PREFIX/share/bash-completion/completions" "$d$PREFIX/share/zsh/site-functions" \
    "$d$PREFIX/share/fish/vendor_completions.d" "$d/usr/sbin"
install -m 0755 "$bin" "$d$PREFIX/bin/ezfs"
ln -sf "$PREFIX/bin/ezfs" "$d/usr/sbin/mount.fuse.ezfs"
install -m 0644 "$root/man/ezfs.1" "$d$PREFIX/share/man/man1/ezfs.1"
install -m 0644 "$root/man/ezfs-format.5" "$d$PREFIX/share/man/man5/ezfs-format.5"
"$bin" completions bash > "$d$PREFIX/share/bash-completion/completions/ezfs"
"$bin" completions zsh > "$d$PREFIX/share/zsh/site-functions/_ezfs"
"$bin" completions fish > "$d$PREFIX/share/fish/vendor_completions.d/ezfs.fish"
if [[ -d /etc/systemd/system || -n $d ]]; then
    install -d "$d/etc/systemd/system"
    sed "s|@BINDIR@|$PREFIX/bin|g" "$here/systemd/ezfs@.service" > "$d/etc/systemd/system/ezfs@.service"
    chmod 0644 "$d/etc/systemd/system/ezfs@.service"
fi
echo "installed ezfs in $d$PREFIX/bin, the mount helper $d/usr/sbin/mount.fuse.ezfs, man pages and completions"
