//! The one place where a name in the mount becomes a name in the backing dir, and a
//! backing entry becomes a name in the mount.
//!
//! Every operation that turns (directory, name) into a backing location asks
//! `Core::at`, and does its system call through the `At` it gets; every listing
//! goes through `Core::list`; every path from the mount root that a control request
//! names goes through [`Core::resolve_as`] (and [`normalize`]), and every backing
//! path shown to a user through [`shown`]. Today a name is stored as it is, and the names the mount
//! reserves (zone markers, temporary files, `.ezfs` at the root) are refused here. A
//! per-zone name transform (encrypted file names) changes this module and the format,
//! not the operations: the zone of the directory is at hand in each of these places.

use super::core::Core;
use super::error::{errno, FsError, FsResult};
use super::inode::{Inode, ROOT};
use super::types::{DirEntry, FileKind};
use crate::backdir::resolve::open_beneath;
use crate::backdir::{sys, Caller};
use crate::zone;
use std::borrow::Cow;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// What a name is looked up for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Use {
    /// A name that should exist: a reserved one does not, as far as the mount goes.
    Existing,
    /// A name to create (or to rename or link to): reserved ones are refused, and a
    /// broken zone takes no new names.
    New,
}

/// An entry of a backing directory, ready for a system call: the directory's
/// descriptor and the name as the backing dir stores it.
pub(super) struct At<'a> {
    dir: BorrowedFd<'a>,
    name: Cow<'a, OsStr>,
}

impl<'a> At<'a> {
    /// A name that already is a backing name: one the filesystem itself uses (a
    /// marker, a temporary file), or one read from the backing dir (a walk, a
    /// descriptor's path). Never transformed again.
    pub fn backing(dir: BorrowedFd<'a>, name: &'a OsStr) -> At<'a> {
        At {
            dir,
            name: Cow::Borrowed(name),
        }
    }

    pub fn stat(&self) -> io::Result<libc::stat> {
        sys::stat_at(self.dir, &self.name)
    }

    pub fn open(&self, flags: i32, mode: u32) -> io::Result<OwnedFd> {
        sys::open_at(self.dir, &self.name, flags, mode)
    }

    /// An `O_PATH` descriptor of the entry itself (a symlink is not followed).
    pub fn open_path(&self) -> io::Result<OwnedFd> {
        self.open(libc::O_PATH | libc::O_NOFOLLOW, 0)
    }

    pub fn mkdir(&self, mode: u32) -> io::Result<()> {
        sys::mkdir_at(self.dir, &self.name, mode)
    }

    pub fn mknod(&self, mode: u32, rdev: u64) -> io::Result<()> {
        sys::mknod_at(self.dir, &self.name, mode, rdev)
    }

    pub fn symlink(&self, target: &OsStr) -> io::Result<()> {
        sys::symlink_at(target, self.dir, &self.name)
    }

    /// Hard-links the file behind the `O_PATH` descriptor `fd` here.
    pub fn link_from(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        sys::link_at(fd, self.dir, &self.name)
    }

    pub fn unlink(&self) -> io::Result<()> {
        sys::unlink_at(self.dir, &self.name, 0)
    }

    pub fn rmdir(&self) -> io::Result<()> {
        sys::unlink_at(self.dir, &self.name, libc::AT_REMOVEDIR)
    }

    /// `renameat2` of this entry to `to` (`RENAME_*` flags).
    pub fn rename_to(&self, to: &At<'_>, flags: u32) -> io::Result<()> {
        sys::rename_at(self.dir, &self.name, to.dir, &to.name, flags)
    }
}

impl Core {
    /// `name` in directory `parent` (whose descriptor is `dir`) as the backing dir
    /// stores it, checked for `how` it is used: a reserved name is ENOENT when looked
    /// for and EPERM when created; a new name in a broken zone is EIO.
    pub(super) fn at<'a>(
        &self,
        parent: &Inode,
        dir: &'a impl AsFd,
        name: &'a OsStr,
        how: Use,
    ) -> FsResult<At<'a>> {
        if zone::is_reserved(name.as_bytes(), parent.id == ROOT) {
            return Err(match how {
                Use::Existing => errno::ENOENT,
                Use::New => errno::EPERM,
            });
        }
        if how == Use::New && parent.zone().is_some_and(|z| z.broken.is_some()) {
            return Err(errno::EIO);
        }
        Ok(At {
            dir: dir.as_fd(),
            name: Cow::Borrowed(name),
        })
    }

    /// The entries of directory `dir` as the mount shows them: "." and "..", then
    /// every backing entry but the reserved ones, under its name in the mount.
    pub(super) fn list(&self, dir: &Inode) -> FsResult<Vec<DirEntry>> {
        let dot = |name: &str| DirEntry {
            name: name.into(),
            ino: dir.key.1,
            kind: FileKind::Dir,
        };
        let mut v = vec![dot("."), dot("..")];
        for (name, ino, d_type) in sys::read_dir(dir.fd()?.as_fd())? {
            if let Some(name) = self.shown_name(dir, name) {
                v.push(DirEntry {
                    name,
                    ino,
                    kind: FileKind::of_dtype(d_type),
                });
            }
        }
        Ok(v)
    }

    /// The name the backing entry `name` of directory `dir` has in the mount; `None`
    /// for the reserved ones, which the mount never shows.
    fn shown_name(&self, dir: &Inode, name: OsString) -> Option<OsString> {
        (!zone::is_reserved(name.as_bytes(), dir.id == ROOT)).then_some(name)
    }

    /// The directory or file at `rel` from the mount root, resolved as `caller` would
    /// through the mount: beneath the backing root, through no symlink, with the
    /// caller's permissions; reserved names (the marker, `.ezfs`) are refused. Returns
    /// its descriptor (`O_PATH`) and its path from the backing root.
    pub fn resolve_as(&self, caller: &Caller, rel: &str) -> FsResult<(OwnedFd, PathBuf)> {
        let rel = normalize(rel)?;
        let root = self.root_fd()?;
        let shown = shown(&rel);
        let fail = |e: io::Error| match e.raw_os_error() {
            Some(libc::ELOOP) => FsError::SymlinkInPath(shown.clone()),
            Some(libc::EXDEV) => FsError::OutsideMount(shown.clone()),
            _ => FsError::at(&shown)(e),
        };
        // the backing root is private (0700): the mount's root shows its own mode, and
        // that is what the caller is checked against for it
        let mut parts = rel.components();
        let Some(first) = parts.next() else {
            let fd = sys::open_at(root.as_fd(), OsStr::new("."), libc::O_PATH, 0).map_err(fail)?;
            return Ok((fd, rel));
        };
        if !self.root_searchable_by(caller) {
            return Err(fail(io::Error::from_raw_os_error(libc::EACCES)));
        }
        let top = sys::open_at(
            root.as_fd(),
            first.as_os_str(),
            libc::O_PATH | libc::O_NOFOLLOW,
            0,
        )
        .map_err(fail)?;
        let rest = parts.as_path().to_path_buf();
        if rest.as_os_str().is_empty() {
            if sys::stat_at(top.as_fd(), OsStr::new(""))
                .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFLNK)
            {
                return Err(fail(io::Error::from_raw_os_error(libc::ELOOP)));
            }
            return Ok((top, rel));
        }
        let fd = caller
            .run_as(|| open_beneath(top.as_fd(), &rest, libc::O_PATH, false))?
            .map_err(fail)?;
        Ok((fd, rel))
    }

    /// Whether `caller` may look names up in the mount's root, by the mode it shows.
    fn root_searchable_by(&self, caller: &Caller) -> bool {
        if caller.is_root() {
            return true;
        }
        let Ok(st) = self
            .root_fd()
            .and_then(|fd| Ok(sys::stat_at(fd.as_fd(), OsStr::new(""))?))
        else {
            return false;
        };
        let mode = self.root_mode.load(std::sync::atomic::Ordering::Relaxed);
        let bits = if caller.uid == st.st_uid {
            mode >> 6
        } else if caller.gid == st.st_gid || caller.groups().contains(&st.st_gid) {
            mode >> 3
        } else {
            mode
        };
        bits & 1 != 0
    }

    /// The path of `dir/name` from the backing root, as the registry stores paths.
    pub(super) fn rel_of(&self, dir: &Inode, name: &OsStr) -> Option<PathBuf> {
        let p = sys::path_of(dir.fd().ok()?.as_fd()).ok()?;
        Some(Path::new(&self.relative(&p)).join(name))
    }

    /// A backing path relative to the backing root, as the registry stores it.
    pub fn relative(&self, p: &Path) -> String {
        p.strip_prefix(&self.backing)
            .unwrap_or(p)
            .to_string_lossy()
            .into_owned()
    }
}

/// A path from the backing root as the mount shows it to a user: "/dir".
pub fn shown(rel: &Path) -> String {
    format!("/{}", rel.display())
}

/// A request's path from the mount root, checked: no `..`, no reserved name, and not
/// `.ezfs` at the top.
pub fn normalize(rel: &str) -> FsResult<PathBuf> {
    let rel = Path::new(rel.trim_start_matches('/'));
    let mut out = PathBuf::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) if !zone::is_reserved(n.as_encoded_bytes(), out.as_os_str().is_empty()) => {
                out.push(n)
            }
            Component::CurDir => {}
            _ => return Err(FsError::InvalidPath(rel.display().to_string())),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_paths_are_checked() {
        assert_eq!(normalize("/a/./b").unwrap(), Path::new("a/b"));
        assert_eq!(normalize("").unwrap(), Path::new(""));
        for bad in [
            "../x",
            "a/../../b",
            "a/.ezfs-zone",
            ".ezfs/keystore.json",
            "a/.ezfs-tmp.1",
        ] {
            assert!(normalize(bad).is_err(), "{bad}");
        }
        assert!(normalize("a/.ezfs").is_ok(), ".ezfs is reserved only at the top");
        let long = "x\n".repeat(3000);
        let e = normalize(&format!("../{long}")).unwrap_err().to_string();
        assert!(e.len() < 300 && !e.contains('\n'), "{e}");
    }
}
