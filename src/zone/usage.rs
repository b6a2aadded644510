//! Which key versions the files in zones use, read from their headers (the key name
//! and version are stored in clear), so `key list`, `zone info` and `key prune` can
//! say what an old version still protects without the passphrase.

use super::walk::{zone_files, Nested};
use crate::format::header::read_header;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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

/// Scans every zone file under `root` (a backing dir; `.ezfs` is skipped). Paths in
/// the result are relative to `root`.
pub fn scan(root: &Path) -> Usage {
    scan_from(root, root, None, Nested::Descend)
}

/// Scans the zone rooted at `zone_root` only (nested zones excluded).
pub fn scan_zone(root: &Path, zone_root: &Path) -> Usage {
    scan_from(root, zone_root, Some(zone_root), Nested::Skip)
}

fn scan_from(root: &Path, start: &Path, zone: Option<&Path>, nested: Nested) -> Usage {
    let mut u = Usage::default();
    let ezfs: PathBuf = root.join(crate::EZFS_DIR);
    let rel = |p: &Path| p.strip_prefix(root).unwrap_or(p).to_string_lossy().into_owned();
    zone_files(start, zone, nested, &|d| d == ezfs, &mut |file, zone_root| {
        if file
            .file_name()
            .is_some_and(|n| super::is_rekey_temp(n.as_encoded_bytes()))
        {
            return;
        }
        let Ok(f) = std::fs::File::open(file) else {
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
            ex.push(rel(file));
        }
    });
    u
}
