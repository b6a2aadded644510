//! Finding ezfs mounts in `/proc/self/mountinfo`: which mount holds a path, and which
//! backing dir it stacks on (the mount's source, set by `ezfs mount`).

use std::path::{Path, PathBuf};

/// Whether a mount is an ezfs mount: a FUSE mount whose source (ezfs sets it to the
/// backing dir) holds `.ezfs` (whose content only root can read, so not looked into). (The kernel shows the type as plain `fuse`
/// when mounted directly, so the type alone cannot tell.)
fn is_ezfs(fstype: &str, source: &str) -> bool {
    (fstype == "fuse" || fstype == "fuse.ezfs") && Path::new(source).join(crate::EZFS_DIR).is_dir()
}

/// One ezfs mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EzMount {
    pub mountpoint: PathBuf,
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

/// Parses mountinfo text into (mountpoint, fstype, source) triples.
pub fn parse(text: &str) -> Vec<(PathBuf, String, String)> {
    text.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let mountpoint = pre.split(' ').nth(4)?;
            let mut post = post.split(' ');
            let fstype = post.next()?;
            let source = post.next()?;
            Some((
                PathBuf::from(unescape(mountpoint)),
                fstype.to_owned(),
                unescape(source),
            ))
        })
        .collect()
}

fn all() -> Vec<(PathBuf, String, String)> {
    parse(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
}

/// Every ezfs mount.
pub fn ezfs_mounts() -> Vec<EzMount> {
    all()
        .into_iter()
        .filter(|(_, t, s)| is_ezfs(t, s))
        .map(|(mountpoint, _, src)| EzMount {
            mountpoint,
            backing: PathBuf::from(src),
        })
        .collect()
}

/// The ezfs mount holding `path` (already canonical), if the closest mount is one.
pub fn mount_of(path: &Path) -> Option<EzMount> {
    let closest = all()
        .into_iter()
        .filter(|(mp, _, _)| path.starts_with(mp))
        .max_by_key(|(mp, _, _)| mp.as_os_str().len())?;
    is_ezfs(&closest.1, &closest.2).then(|| EzMount {
        mountpoint: closest.0,
        backing: PathBuf::from(closest.2),
    })
}

/// Whether `path` (canonical) is itself a mount point.
pub fn is_mountpoint(path: &Path) -> bool {
    all().iter().any(|(mp, _, _)| mp == path)
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
                "/srv/back ing".into()
            )
        );
        assert_eq!(v[1].1, "proc");
    }
}
