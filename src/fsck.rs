//! `ezfs fsck`: authenticate every header and every block of every encrypted file,
//! and check the zone markers against the keystore's registry.
//!
//! Works on the backing dir directly (mounted or not) and only reads, except with
//! quarantine, which moves damaged files into `lost+found` inside their zone: nothing
//! is ever deleted.

use crate::format::layout::plain_size;
use crate::format::BlockCodec;
use crate::keys::Keystore;
use crate::zone::{ZoneMarker, MARKER_FILE};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Where quarantined files go, inside their zone root.
pub const QUARANTINE_DIR: &str = "lost+found";

/// One damaged file.
#[derive(Debug, Clone, Serialize)]
pub struct Damage {
    /// Path relative to the backing dir.
    pub path: String,
    /// What is wrong, one sentence.
    pub problem: String,
    /// Damaged block ranges (inclusive), when the header is fine but blocks are not.
    pub blocks: Vec<(u64, u64)>,
    /// Where the file was moved by quarantine.
    pub quarantined_to: Option<String>,
}

/// What fsck found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub zones: u64,
    pub files: u64,
    pub blocks: u64,
    pub damaged: Vec<Damage>,
    /// Problems with zones themselves (markers, registry).
    pub zone_problems: Vec<String>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.damaged.is_empty() && self.zone_problems.is_empty()
    }
}

/// Collapses sorted block numbers into inclusive ranges.
fn ranges(blocks: &[u64]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &b in blocks {
        match out.last_mut() {
            Some((_, hi)) if *hi + 1 == b => *hi = b,
            _ => out.push((b, b)),
        }
    }
    out
}

/// What is wrong with a file, and which block ranges.
type Problem = (String, Vec<(u64, u64)>);

/// Checks one encrypted file; returns the number of blocks and the damage, if any.
fn check_file(path: &Path, ks: &Keystore) -> (u64, Option<Problem>) {
    let fail = |msg: String| (0, Some((msg, Vec::new())));
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) => return fail(format!("cannot open: {e}")),
    };
    let len = match f.metadata() {
        Ok(m) => m.len(),
        Err(e) => return fail(format!("cannot stat: {e}")),
    };
    if len == 0 {
        return (0, None);
    }
    let Ok(size) = plain_size(len) else {
        return fail(format!("backing size {len} is too short for a header"));
    };
    let header = match crate::format::header::read_header(&f) {
        Ok(h) => h,
        Err(e) => return fail(e),
    };
    let key = match ks.material(&header.key_name, header.key_version) {
        Ok(k) => k,
        Err(e) => return fail(format!("{e} (key {}@{})", header.key_name, header.key_version)),
    };
    let Ok(dek) = key.cipher().unwrap_key(&header.own_aad(), &header.edek) else {
        return fail("header authentication failed".into());
    };
    let codec = BlockCodec::new(&dek, header.file_id);
    let blocks = crate::format::layout::block_count(size);
    match codec.verify(&f, size) {
        Ok(bad) if bad.is_empty() => (blocks, None),
        Ok(bad) => (
            blocks,
            Some((
                format!("{} block(s) fail authentication", bad.len()),
                ranges(&bad),
            )),
        ),
        Err(e) => (blocks, Some((format!("read error: {e}"), Vec::new()))),
    }
}

/// Moves `path` into `zone_root/lost+found/`, under a name that says where it was.
fn quarantine(backing: &Path, zone_root: &Path, path: &Path) -> std::io::Result<PathBuf> {
    let dir = zone_root.join(QUARANTINE_DIR);
    std::fs::create_dir_all(&dir)?;
    let rel = path
        .strip_prefix(backing)
        .unwrap_or(path)
        .to_string_lossy()
        .replace('/', "_");
    let mut target = dir.join(&rel);
    let mut n = 1;
    while target.exists() {
        target = dir.join(format!("{rel}.{n}"));
        n += 1;
    }
    std::fs::rename(path, &target)?;
    Ok(target)
}

/// Walks the backing dir. `progress(done_files)` is called after each file.
pub fn check(
    backing: &Path,
    ks: &Keystore,
    quarantine_damaged: bool,
    progress: &mut dyn FnMut(u64),
) -> Report {
    let mut report = Report::default();
    let rel = |p: &Path| {
        p.strip_prefix(backing)
            .unwrap_or(p)
            .to_string_lossy()
            .into_owned()
    };
    let mut seen_zones: BTreeMap<String, String> = BTreeMap::new();
    // depth-first, carrying the closest zone root (None outside zones)
    let mut stack: Vec<(PathBuf, Option<PathBuf>)> = vec![(backing.to_path_buf(), None)];
    while let Some((dir, zone)) = stack.pop() {
        let mut zone = zone;
        if let Ok(bytes) = std::fs::read(dir.join(MARKER_FILE)) {
            match ZoneMarker::decode(&bytes, ks.master()) {
                Ok(m) => {
                    report.zones += 1;
                    seen_zones.insert(m.id_hex(), rel(&dir));
                    zone = Some(dir.clone());
                }
                Err(e) => {
                    report.zone_problems.push(format!("/{}: {e}", rel(&dir)));
                    zone = Some(dir.clone());
                }
            }
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            report
                .zone_problems
                .push(format!("/{}: cannot list directory", rel(&dir)));
            continue;
        };
        let mut entries: Vec<_> = entries.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let Ok(t) = e.file_type() else { continue };
            if dir == backing && e.file_name() == crate::EZFS_DIR {
                continue;
            }
            if t.is_dir() {
                let in_quarantine = zone.as_ref().is_some_and(|z| p == z.join(QUARANTINE_DIR));
                if !in_quarantine {
                    stack.push((p, zone.clone()));
                }
            } else if t.is_file()
                && e.file_name() != MARKER_FILE
                && !crate::zone::is_rekey_temp(e.file_name().as_encoded_bytes())
            {
                let Some(zone_root) = &zone else { continue };
                report.files += 1;
                let (blocks, damage) = check_file(&p, ks);
                report.blocks += blocks;
                if let Some((problem, blocks)) = damage {
                    let quarantined_to = if quarantine_damaged {
                        match quarantine(backing, zone_root, &p) {
                            Ok(t) => Some(rel(&t)),
                            Err(e) => {
                                report
                                    .zone_problems
                                    .push(format!("/{}: quarantine failed: {e}", rel(&p)));
                                None
                            }
                        }
                    } else {
                        None
                    };
                    report.damaged.push(Damage {
                        path: rel(&p),
                        problem,
                        blocks,
                        quarantined_to,
                    });
                }
                progress(report.files);
            }
        }
    }
    for (id, z) in &ks.body().zones {
        if !seen_zones.contains_key(id) {
            report.zone_problems.push(format!(
                "zone {id} (key {}, last seen at /{}) has no marker in the backing dir",
                z.key, z.path
            ));
        }
    }
    for (id, path) in &seen_zones {
        if !ks.body().zones.contains_key(id) {
            report
                .zone_problems
                .push(format!("/{path}: zone {id} is not in the keystore's registry"));
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_ranges() {
        assert_eq!(ranges(&[]), vec![]);
        assert_eq!(ranges(&[1, 2, 3, 7, 9, 10]), vec![(1, 3), (7, 7), (9, 10)]);
    }
}
