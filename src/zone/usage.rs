//! Which key versions the files in zones use, read from their headers (the key name
//! and version are stored in clear), so `key list`, `zone info` and `key prune` can
//! say what an old version still protects without the passphrase.

use super::walk::{has_marker, zone_files, Nested};
use crate::backdir::sys;
use crate::format::header::read_header;
use serde::Serialize;
use std::collections::BTreeMap;
use std::os::fd::BorrowedFd;
use std::path::Path;

/// How many files use each version of each key, and a few of their paths.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Usage {
    /// key name -> version -> files.
    pub versions: BTreeMap<String, BTreeMap<u32, u64>>,
    /// zone root (relative to the scanned tree's root) -> "key@version" -> files.
    pub zones: BTreeMap<String, BTreeMap<String, u64>>,
    /// key name -> version -> up to [`EXAMPLES`] file paths (relative).
    #[serde(skip)]
    pub examples: BTreeMap<String, BTreeMap<u32, Vec<String>>>,
    /// Files in zones whose header cannot be read (damaged; see `ezfs fsck`).
    pub unreadable: u64,
    /// Empty files without a header yet (they get the current version when written).
    pub empty: u64,
}

/// How many example paths [`Usage`] keeps per key version.
pub const EXAMPLES: usize = 5;

impl Usage {
    /// Files using `name@version`.
    pub fn files(&self, name: &str, version: u32) -> u64 {
        self.versions
            .get(name)
            .and_then(|v| v.get(&version))
            .copied()
            .unwrap_or(0)
    }
}

/// Scans every zone file under the backing root `root` (`.ezfs` is skipped): zone
/// roots are the directories holding a marker (whatever its state) and the registered
/// roots at `registered` (paths from the root), so that no file that may need a key
/// version is missed. Paths in the result are relative to `root`.
pub fn scan(root: BorrowedFd<'_>, registered: &[String]) -> Usage {
    let is_root =
        |d: BorrowedFd<'_>, rel: &Path| has_marker(d) || registered.iter().any(|r| Path::new(r) == rel);
    let ezfs = Path::new(crate::EZFS_DIR);
    scan_from(root, Path::new(""), false, Nested::Descend, &is_root, &|rel| {
        rel == ezfs
    })
}

/// Scans the zone whose root is `zone_root`, at `rel` from the backing root (nested
/// zones excluded).
pub fn scan_zone(zone_root: BorrowedFd<'_>, rel: &Path) -> Usage {
    // a zone at the backing root: its .ezfs is no part of it
    let top = rel.as_os_str().is_empty();
    let ezfs = Path::new(crate::EZFS_DIR);
    scan_from(zone_root, rel, true, Nested::Skip, &|d, _| has_marker(d), &|r| {
        top && r == ezfs
    })
}

fn scan_from(
    start: BorrowedFd<'_>,
    start_rel: &Path,
    in_zone: bool,
    nested: Nested,
    is_root: &dyn Fn(BorrowedFd<'_>, &Path) -> bool,
    skip_dir: &dyn Fn(&Path) -> bool,
) -> Usage {
    let mut u = Usage::default();
    let rel = |p: &Path| start_rel.join(p).to_string_lossy().into_owned();
    zone_files(
        start,
        in_zone,
        nested,
        is_root,
        skip_dir,
        &mut |file, zone_root| {
            let Ok(f) = open_regular(file.dir, file.name) else {
                u.unreadable += 1;
                return;
            };
            if f.metadata().is_ok_and(|m| m.len() == 0) {
                u.empty += 1;
                return;
            }
            let Ok(h) = read_header(&f) else {
                u.unreadable += 1;
                return;
            };
            *u.versions
                .entry(h.key_name.clone())
                .or_default()
                .entry(h.key_version)
                .or_default() += 1;
            *u.zones
                .entry(rel(zone_root))
                .or_default()
                .entry(format!("{}@{}", h.key_name, h.key_version))
                .or_default() += 1;
            let ex = u
                .examples
                .entry(h.key_name)
                .or_default()
                .entry(h.key_version)
                .or_default();
            if ex.len() < EXAMPLES {
                ex.push(rel(file.rel));
            }
        },
    );
    u
}

/// Opens `dir/name` for reading if it is a regular file (never through a link, never
/// waiting on a FIFO).
pub fn open_regular(dir: BorrowedFd<'_>, name: &std::ffi::OsStr) -> std::io::Result<std::fs::File> {
    let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY;
    let f = std::fs::File::from(sys::open_at(dir, name, flags, 0)?);
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    Ok(f)
}
