//! Access times: the mount's atime options, honoured by the daemon.
//!
//! The kernel keeps no access time for FUSE files (it marks their inodes `S_NOATIME`):
//! what `stat` shows is the backing file's atime. The daemon opens backing files and
//! lists backing directories with `O_NOATIME`, so the backing filesystem's own policy
//! plays no part, and sets the atime itself as the mount's options say: `strictatime`
//! on every read, `relatime` (the default, as for any Linux mount) when the atime is
//! not newer than the mtime or ctime or is a day old, checked once per open file,
//! `noatime` never, and `nodiratime` never for directories. A read through the codec
//! (a file in a zone) counts like any other.

use crate::backdir::sys;
use std::ffi::OsStr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// When a read sets the access time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Never,
    /// `relatime`: when the atime is not after the mtime or ctime, or is a day old.
    Relative,
    Strict,
}

/// The policy of a mount, for files and for directories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// When reads of regular files set the atime.
    pub files: Mode,
    /// When listings of directories set the atime.
    pub dirs: Mode,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            files: Mode::Relative,
            dirs: Mode::Relative,
        }
    }
}

/// Whether `o` is an atime mount option (handled here, not passed to the kernel,
/// whose FUSE inodes keep no atime).
pub fn is_option(o: &str) -> bool {
    matches!(
        o,
        "atime" | "noatime" | "relatime" | "norelatime" | "strictatime" | "nodiratime" | "diratime"
    )
}

impl Policy {
    /// The policy that mount options give; the last of conflicting ones wins.
    pub fn from_options<'a>(opts: impl IntoIterator<Item = &'a str>) -> Policy {
        let mut p = Policy::default();
        let mut nodiratime = false;
        for o in opts {
            match o {
                "noatime" => p.files = Mode::Never,
                "relatime" | "atime" => p.files = Mode::Relative,
                "strictatime" | "norelatime" => p.files = Mode::Strict,
                "nodiratime" => nodiratime = true,
                "diratime" => nodiratime = false,
                _ => {}
            }
        }
        p.dirs = if nodiratime { Mode::Never } else { p.files };
        p
    }
}

/// Whether a relatime policy updates an atime of `at` given `st`, at time `now`.
fn relatime_due(st: &libc::stat, now: i64) -> bool {
    let at = (st.st_atime, st.st_atime_nsec);
    at <= (st.st_mtime, st.st_mtime_nsec)
        || at <= (st.st_ctime, st.st_ctime_nsec)
        || now - st.st_atime >= 24 * 3600
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Marks the file open as `f` (for reading or writing) read, per `mode`; `checked`
/// is the open file's flag that the relatime check was made (once per open file).
pub fn file_read(mode: Mode, f: &std::fs::File, checked: &AtomicBool) {
    let due = match mode {
        Mode::Never => false,
        Mode::Strict => true,
        Mode::Relative => {
            !checked.swap(true, Ordering::Relaxed)
                && sys::stat_at(std::os::fd::AsFd::as_fd(f), OsStr::new(""))
                    .is_ok_and(|st| relatime_due(&st, now()))
        }
    };
    if due {
        let times = [
            libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_NOW,
            },
            libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_OMIT,
            },
        ];
        // SAFETY: futimens on an open descriptor with two valid timespecs. A failure
        // (a file not ours to touch) only leaves the atime as it was.
        unsafe { libc::futimens(f.as_raw_fd(), times.as_ptr()) };
    }
}

/// Marks the directory behind `dir` (any descriptor) listed, per `mode`.
pub fn dir_listed(mode: Mode, dir: BorrowedFd<'_>) {
    let due = match mode {
        Mode::Never => false,
        Mode::Strict => true,
        Mode::Relative => sys::stat_at(dir, OsStr::new("")).is_ok_and(|st| relatime_due(&st, now())),
    };
    if due {
        let _ = sys::utimens(dir, Some(None), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_make_a_policy() {
        let p = |o: &[&str]| Policy::from_options(o.iter().copied());
        assert_eq!(p(&[]), Policy::default());
        assert_eq!(
            p(&["noatime"]),
            Policy {
                files: Mode::Never,
                dirs: Mode::Never
            }
        );
        assert_eq!(
            p(&["strictatime", "nodiratime"]),
            Policy {
                files: Mode::Strict,
                dirs: Mode::Never
            }
        );
        assert_eq!(p(&["noatime", "relatime"]).files, Mode::Relative);
        assert!(is_option("relatime") && !is_option("ro"));
    }

    #[test]
    fn relatime_rule() {
        // SAFETY: stat is plain integers.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        st.st_mtime = 100;
        st.st_ctime = 100;
        st.st_atime = 100;
        assert!(relatime_due(&st, 200), "not after mtime");
        st.st_atime = 150;
        assert!(!relatime_due(&st, 200), "after mtime and ctime, recent");
        assert!(relatime_due(&st, 150 + 24 * 3600), "a day old");
    }
}
