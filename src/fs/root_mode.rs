//! The permission bits of the mount's root, kept apart from the backing root's.
//!
//! `ezfs init` makes the backing root 0700: no user but its owner may reach the
//! ciphertext, or edit what they own behind the mount's back. The mount's root is that
//! same directory, though, and with `--allow-other` the kernel checks users against
//! the mode the daemon reports for it. So the mount's root shows its own mode, 0755
//! unless `chmod` on the mount's root set another one, which is recorded in
//! `.ezfs/root-mode` (octal); the backing root's mode never changes.

use crate::backdir::{resolve, sys};
use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::path::Path;

const FILE: &str = "root-mode";
/// What the mount's root shows until `chmod` says otherwise.
pub const DEFAULT: u32 = 0o755;

fn ezfs_dir(backing: &Path) -> std::io::Result<std::os::fd::OwnedFd> {
    sys::open_at(
        sys::at_cwd(),
        crate::keys::keystore::ezfs_dir(backing).as_os_str(),
        libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    )
}

/// The recorded mode of the mount's root, or [`DEFAULT`].
pub fn load(backing: &Path) -> u32 {
    ezfs_dir(backing)
        .ok()
        .and_then(|d| resolve::read_small(d.as_fd(), OsStr::new(FILE), 64).ok())
        .and_then(|b| u32::from_str_radix(String::from_utf8_lossy(&b).trim(), 8).ok())
        .map_or(DEFAULT, |m| m & 0o7777)
}

/// Records `mode` as the mode of the mount's root.
pub fn store(backing: &Path, mode: u32) -> std::io::Result<()> {
    let d = ezfs_dir(backing)?;
    resolve::replace_at(
        d.as_fd(),
        OsStr::new(FILE),
        format!("{:o}\n", mode & 0o7777).as_bytes(),
        0o644,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_and_recorded() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join(crate::EZFS_DIR)).unwrap();
        assert_eq!(load(t.path()), DEFAULT);
        store(t.path(), 0o1777).unwrap();
        assert_eq!(load(t.path()), 0o1777);
    }
}
