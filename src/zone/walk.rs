//! Walking the files of zones in a backing tree without the keystore: a directory
//! holding a zone marker is a zone root, and every regular file below it (down to the
//! next zone root) is encrypted under that zone's key.

use super::MARKER_FILE;
use std::path::{Path, PathBuf};

/// Whether a walk continues into zones nested inside the one it started in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nested {
    /// Visit nested zones' files too (each with its own zone root).
    Descend,
    /// Stop at nested zone roots (they keep their own keys).
    Skip,
}

/// Whether `dir` is a zone root (has a marker; authenticity is the caller's business).
pub fn is_zone_root(dir: &Path) -> bool {
    std::fs::symlink_metadata(dir.join(MARKER_FILE)).is_ok_and(|m| m.is_file())
}

/// Calls `visit(file, zone_root)` for every regular file in a zone under `start`,
/// depth first in name order. `start` is inside the zone `zone` (`None` outside
/// zones: only files under zone roots found on the way are visited). Directories for
/// which `skip_dir` is true are not entered; `.ezfs` at the top is never entered by
/// callers that pass the backing root and skip it.
pub fn zone_files(
    start: &Path,
    zone: Option<&Path>,
    nested: Nested,
    skip_dir: &dyn Fn(&Path) -> bool,
    visit: &mut dyn FnMut(&Path, &Path),
) {
    let mut stack: Vec<(PathBuf, Option<PathBuf>)> = vec![(start.to_path_buf(), zone.map(Path::to_path_buf))];
    while let Some((dir, mut zone)) = stack.pop() {
        if is_zone_root(&dir) && zone.as_deref() != Some(dir.as_path()) {
            if zone.is_some() && nested == Nested::Skip {
                continue;
            }
            zone = Some(dir.clone());
        }
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        let mut entries: Vec<_> = rd.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        // reversed onto the stack so that directories pop in name order
        for e in entries.into_iter().rev() {
            let Ok(t) = e.file_type() else { continue };
            let p = e.path();
            if t.is_dir() {
                if !skip_dir(&p) {
                    stack.push((p, zone.clone()));
                }
            } else if t.is_file() && e.file_name() != MARKER_FILE {
                if let Some(z) = &zone {
                    visit(&p, z);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_files_per_zone() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        for d in ["plain", "z", "z/sub", "z/inner", "z/inner/deep"] {
            std::fs::create_dir(r.join(d)).unwrap();
        }
        for f in ["plain/a", "z/b", "z/sub/c", "z/inner/d", "z/inner/deep/e"] {
            std::fs::write(r.join(f), b"x").unwrap();
        }
        std::fs::write(r.join("z").join(MARKER_FILE), b"{}").unwrap();
        std::fs::write(r.join("z/inner").join(MARKER_FILE), b"{}").unwrap();
        let collect = |start: &Path, zone: Option<&Path>, nested| {
            let mut out = Vec::new();
            zone_files(start, zone, nested, &|_| false, &mut |f, z| {
                let rel = |p: &Path| p.strip_prefix(r).unwrap().to_string_lossy().into_owned();
                out.push((rel(f), rel(z)));
            });
            out
        };
        let all = collect(r, None, Nested::Descend);
        let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(
            all,
            vec![
                pair("z/b", "z"),
                pair("z/inner/d", "z/inner"),
                pair("z/inner/deep/e", "z/inner"),
                pair("z/sub/c", "z"),
            ]
        );
        let z = r.join("z");
        let outer = collect(&z, Some(&z), Nested::Skip);
        assert_eq!(outer, vec![pair("z/b", "z"), pair("z/sub/c", "z")]);
    }
}
