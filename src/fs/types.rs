//! The core's own vocabulary for what it answers: attributes, directory entries,
//! opened handles. The FUSE adapter translates these to fuser's types; the core and
//! its tests never see fuser.

use std::ffi::OsString;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What kind of file a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A named pipe.
    Fifo,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A Unix socket.
    Socket,
}

impl FileKind {
    /// The kind of an `st_mode`.
    pub fn of_mode(mode: u32) -> FileKind {
        match mode & libc::S_IFMT {
            libc::S_IFDIR => FileKind::Dir,
            libc::S_IFLNK => FileKind::Symlink,
            libc::S_IFIFO => FileKind::Fifo,
            libc::S_IFCHR => FileKind::CharDevice,
            libc::S_IFBLK => FileKind::BlockDevice,
            libc::S_IFSOCK => FileKind::Socket,
            _ => FileKind::File,
        }
    }

    /// The kind of a directory entry's `d_type`.
    pub fn of_dtype(d: u8) -> FileKind {
        match d {
            libc::DT_DIR => FileKind::Dir,
            libc::DT_LNK => FileKind::Symlink,
            libc::DT_FIFO => FileKind::Fifo,
            libc::DT_CHR => FileKind::CharDevice,
            libc::DT_BLK => FileKind::BlockDevice,
            libc::DT_SOCK => FileKind::Socket,
            _ => FileKind::File,
        }
    }
}

/// A node's attributes as the mount shows them: the backing file's, with the
/// plaintext size of an encrypted file and the mount root's own mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    /// Node id.
    pub ino: u64,
    /// Bytes a reader sees: the plaintext size of an encrypted file.
    pub size: u64,
    /// 512-byte blocks the backing file takes.
    pub blocks: u64,
    /// Last access.
    pub atime: SystemTime,
    /// Last change of the contents.
    pub mtime: SystemTime,
    /// Last change of the inode.
    pub ctime: SystemTime,
    /// What kind of file the node is.
    pub kind: FileKind,
    /// Permission bits (and set-id, sticky).
    pub perm: u16,
    /// Hard links to the backing file.
    pub nlink: u32,
    /// Owner's uid.
    pub uid: u32,
    /// Group's gid.
    pub gid: u32,
    /// Device number of a device file.
    pub rdev: u32,
}

/// A `timespec` as a point in time (before 1970 too).
pub fn system_time(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs()) + Duration::from_nanos(nsec as u64)
    }
}

/// A time to set: now, or a given one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetTime {
    /// The current time.
    Now,
    /// The time given.
    At(SystemTime),
}

impl SetTime {
    /// As `utimensat` wants it: `None` for now.
    pub fn timespec(self) -> Option<libc::timespec> {
        let SetTime::At(t) = self else { return None };
        let (sec, nsec) = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => (d.as_secs() as i64, d.subsec_nanos() as i64),
            Err(e) => {
                let d = e.duration();
                let (s, n) = (-(d.as_secs() as i64), d.subsec_nanos() as i64);
                if n == 0 {
                    (s, 0)
                } else {
                    (s - 1, 1_000_000_000 - n)
                }
            }
        };
        Some(libc::timespec {
            tv_sec: sec,
            tv_nsec: nsec,
        })
    }
}

/// The changes of one `setattr`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetAttr {
    /// New mode (only its permission, set-id and sticky bits are used).
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New size in bytes (plaintext, for an encrypted file).
    pub size: Option<u64>,
    /// New access time.
    pub atime: Option<SetTime>,
    /// New modification time.
    pub mtime: Option<SetTime>,
}

/// One entry of a directory listing, as the mount shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's name.
    pub name: OsString,
    /// The name in the backing dir, where it differs (an encrypted name): a lookup of
    /// the listed entry then needs no encryption.
    pub backing: Option<OsString>,
    /// The backing inode number (the node id the entry gets at lookup, as a rule).
    pub ino: u64,
    /// What kind of file the entry is.
    pub kind: FileKind,
}

/// A file handle the core opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    /// The handle's id, for later requests on it.
    pub fh: u64,
    /// The kernel may keep the pages it cached for the file (see
    /// `Inode::unchanged_since_open`).
    pub keep_cache: bool,
}

/// Space on the backing filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFs {
    /// Total blocks, in `frsize` units.
    pub blocks: u64,
    /// Free blocks.
    pub bfree: u64,
    /// Free blocks an unprivileged user may take.
    pub bavail: u64,
    /// Total inodes.
    pub files: u64,
    /// Free inodes.
    pub ffree: u64,
    /// Preferred I/O size in bytes.
    pub bsize: u32,
    /// Longest name, in bytes.
    pub namelen: u32,
    /// Fragment size in bytes: the unit of the block counts.
    pub frsize: u32,
}

/// What `fallocate` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocate {
    /// Where the range starts, in bytes of the file as the mount shows it.
    pub offset: u64,
    /// Bytes in the range.
    pub length: u64,
    /// The `FALLOC_FL_*` mode bits.
    pub mode: i32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_before_1970_round_trip() {
        for (s, n) in [(0, 0), (1_700_000_000, 5), (-1, 0), (-2, 999_999_999), (-5, 1)] {
            let t = system_time(s, n);
            let ts = SetTime::At(t).timespec().unwrap();
            assert_eq!((ts.tv_sec, ts.tv_nsec), (s, n));
        }
        assert!(SetTime::Now.timespec().is_none());
    }

    #[test]
    fn kinds_from_mode_and_dtype_agree() {
        for (mode, d) in [
            (libc::S_IFREG, libc::DT_REG),
            (libc::S_IFDIR, libc::DT_DIR),
            (libc::S_IFLNK, libc::DT_LNK),
            (libc::S_IFIFO, libc::DT_FIFO),
            (libc::S_IFSOCK, libc::DT_SOCK),
        ] {
            assert_eq!(FileKind::of_mode(mode | 0o644), FileKind::of_dtype(d));
        }
    }
}
