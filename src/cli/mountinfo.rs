//! Finding ezfs mounts in `/proc/self/mountinfo`: which mount holds a path, and which
//! backing dir it stacks on (the mount's source, set by `ezfs mount`).

use std::path::{Path, PathBuf};

/// Whether a mount is an ezfs mount this process may trust: type `fuse.ezfs` (or plain
/// `fuse` with a source holding `.ezfs`, as older builds mounted), mounted by root or
/// by this user (`user_id=` in its options). Anyone can make a FUSE mount that looks
/// like ezfs (`fsname=`, `subtype=ezfs`), but not one with another user's id: a key
/// command run by root never acts on a user's look-alike mount. (The control socket's
/// peer is checked too, see `control`.)
fn is_ezfs(fstype: &str, source: &str, options: &str) -> bool {
    let ezfs =
        fstype == "fuse.ezfs" || (fstype == "fuse" && Path::new(source).join(crate::EZFS_DIR).is_dir());
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    let owner = options
        .split(',')
        .find_map(|o| o.strip_prefix("user_id="))
        .and_then(|u| u.parse::<u32>().ok());
    ezfs && owner.is_some_and(|u| u == 0 || u == me)
}

/// One ezfs mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EzMount {
    /// Where the filesystem is mounted.
    pub mountpoint: PathBuf,
    /// The backing directory (from the mount's source field).
    pub backing: PathBuf,
}

/// Undoes mountinfo's octal escapes (`\040` for a space, and so on).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The "major:minor" device of the mount at `mountpoint` (names its bdi in sysfs).
pub fn device_of(mountpoint: &Path) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().rev().find_map(|l| {
        let mut f = l.split(' ');
        let dev = f.nth(2)?;
        let mp = f.nth(1)?;
        (Path::new(&unescape(mp)) == mountpoint).then(|| dev.to_owned())
    })
}

/// One line of mountinfo: mount point, type, source, superblock options.
pub type MountLine = (PathBuf, String, String, String);

/// Parses mountinfo text.
pub fn parse(text: &str) -> Vec<MountLine> {
    text.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let mountpoint = pre.split(' ').nth(4)?;
            let mut post = post.split(' ');
            let fstype = post.next()?;
            let source = post.next()?;
            let options = post.next().unwrap_or("");
            Some((
                PathBuf::from(unescape(mountpoint)),
                fstype.to_owned(),
                unescape(source),
                options.to_owned(),
            ))
        })
        .collect()
}

fn all() -> Vec<MountLine> {
    parse(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
}

/// Every ezfs mount.
pub fn ezfs_mounts() -> Vec<EzMount> {
    all()
        .into_iter()
        .filter(|(_, t, s, o)| is_ezfs(t, s, o))
        .map(|(mountpoint, _, src, _)| EzMount {
            mountpoint,
            backing: PathBuf::from(src),
        })
        .collect()
}

/// The ezfs mount holding `path` (already canonical), if the closest mount is one.
pub fn mount_of(path: &Path) -> Option<EzMount> {
    let closest = all()
        .into_iter()
        .filter(|(mp, _, _, _)| path.starts_with(mp))
        .max_by_key(|(mp, _, _, _)| mp.as_os_str().len())?;
    is_ezfs(&closest.1, &closest.2, &closest.3).then(|| EzMount {
        mountpoint: closest.0,
        backing: PathBuf::from(closest.2),
    })
}

/// Whether the mount at `mountpoint` is dead: its daemon is gone, and every access
/// gives ENOTCONN ("Transport endpoint is not connected").
pub fn is_dead(mountpoint: &Path) -> bool {
    std::fs::metadata(mountpoint).is_err_and(|e| e.raw_os_error() == Some(libc::ENOTCONN))
}

/// Every ezfs mount whose daemon is gone.
pub fn dead_mounts() -> Vec<EzMount> {
    all()
        .into_iter()
        .filter(|(mp, t, _, _)| (t == "fuse.ezfs" || t == "fuse") && is_dead(mp))
        .map(|(mountpoint, _, src, _)| EzMount {
            mountpoint,
            backing: PathBuf::from(src),
        })
        .collect()
}

/// The dead ezfs mount at or above `path` (absolute, not canonicalized: a path in a
/// dead mount cannot be), if there is one.
pub fn dead_mount_of(path: &Path) -> Option<EzMount> {
    dead_mounts()
        .into_iter()
        .filter(|m| path.starts_with(&m.mountpoint))
        .max_by_key(|m| m.mountpoint.as_os_str().len())
}

/// The sentence that says a mount is dead and how to clear it.
pub fn dead_message(m: &EzMount) -> String {
    format!(
        "the ezfs mount at {} (of {}) is dead: its daemon is gone; 'ezfs umount {}' clears it",
        m.mountpoint.display(),
        m.backing.display(),
        m.mountpoint.display()
    )
}

/// Whether `path` (canonical) is itself a mount point.
pub fn is_mountpoint(path: &Path) -> bool {
    all().iter().any(|(mp, _, _, _)| mp == path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_unescapes() {
        let text =
            "36 35 98:0 / /mnt/my\\040dir rw,noatime master:1 - fuse.ezfs /srv/back\\040ing rw,user_id=0\n\
                    22 1 0:21 / /proc rw - proc proc rw\n";
        let v = parse(text);
        assert_eq!(
            v[0],
            (
                PathBuf::from("/mnt/my dir"),
                "fuse.ezfs".into(),
                "/srv/back ing".into(),
                "rw,user_id=0".into()
            )
        );
        assert_eq!(v[1].1, "proc");
    }

    #[test]
    fn only_mounts_of_root_or_oneself_are_trusted() {
        assert!(is_ezfs("fuse.ezfs", "/nonexistent", "rw,user_id=0,group_id=0"));
        assert!(!is_ezfs(
            "fuse.ezfs",
            "/nonexistent",
            "rw,user_id=4242,group_id=0"
        ));
        assert!(!is_ezfs("fuse.ezfs", "/nonexistent", "rw"));
        assert!(!is_ezfs("fuse.sshfs", "/nonexistent", "rw,user_id=0"));
    }
}
