//! Walking the files of zones in a backing tree (on descriptors, see
//! [`crate::backdir::walk`]): every regular file below a zone root, down to the next
//! zone root, belongs to that zone.

use super::MARKER_FILE;
use crate::backdir::walk::{walk, Kind, Visitor};
use crate::backdir::{resolve, sys};
use std::ffi::OsStr;
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};

/// Whether a walk continues into zones nested inside the one it started in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nested {
    /// Visit nested zones' files too (each with its own zone root).
    Descend,
    /// Stop at nested zone roots (they keep their own keys).
    Skip,
}

/// Whether directory `dir` holds an entry named like a zone marker (of any kind:
/// authenticity is the caller's business, and a walk that must not miss a zone counts
/// a bad marker as a root).
pub fn has_marker(dir: BorrowedFd<'_>) -> bool {
    sys::stat_at(dir, OsStr::new(MARKER_FILE)).is_ok()
}

/// A regular file of a zone, as a walk meets it.
pub struct ZoneFile<'a> {
    /// The directory holding it.
    pub dir: BorrowedFd<'a>,
    /// Its name in `dir`.
    pub name: &'a OsStr,
    /// Its path from the walk's start.
    pub rel: &'a Path,
    /// Inode number from the directory listing.
    pub ino: u64,
}

/// Calls `visit(file, zone_root)` for every regular file in a zone under directory
/// `start`, depth first in name order; `zone_root` is the path of the file's zone root
/// from `start`. `start` is itself in a zone when `in_zone` (its root is `start`, or
/// above it: files then report `start` as their root). `is_root(dir, rel)` tells zone
/// roots; directories for which `skip_dir(rel)` holds are not entered. Markers and
/// temporary files are not zone files.
pub fn zone_files(
    start: BorrowedFd<'_>,
    in_zone: bool,
    nested: Nested,
    is_root: &dyn Fn(BorrowedFd<'_>, &Path) -> bool,
    skip_dir: &dyn Fn(&Path) -> bool,
    visit: &mut dyn FnMut(&ZoneFile<'_>, &Path),
) {
    struct V<'v, 'f> {
        in_zone: bool,
        nested: Nested,
        is_root: &'v dyn Fn(BorrowedFd<'_>, &Path) -> bool,
        skip_dir: &'v dyn Fn(&Path) -> bool,
        visit: &'v mut dyn FnMut(&ZoneFile<'_>, &Path),
        _f: std::marker::PhantomData<&'f ()>,
    }
    impl Visitor for V<'_, '_> {
        /// The zone root's path, `None` outside zones.
        type Ctx = Option<PathBuf>;
        fn enter(
            &mut self,
            dir: BorrowedFd<'_>,
            rel: &Path,
            parent: Option<&Self::Ctx>,
        ) -> Option<Self::Ctx> {
            let Some(parent) = parent else {
                // the start
                let root = (self.in_zone || (self.is_root)(dir, rel)).then(PathBuf::new);
                return Some(root);
            };
            if (self.skip_dir)(rel) {
                return None;
            }
            if (self.is_root)(dir, rel) {
                if parent.is_some() && self.nested == Nested::Skip {
                    return None;
                }
                return Some(Some(rel.to_path_buf()));
            }
            Some(parent.clone())
        }
        fn entry(
            &mut self,
            dir: BorrowedFd<'_>,
            name: &OsStr,
            rel: &Path,
            kind: Kind,
            ino: u64,
            ctx: &Self::Ctx,
        ) {
            let Some(root) = ctx else { return };
            let b = name.as_encoded_bytes();
            if kind != Kind::File
                || super::is_housekeeping(b)
                || super::is_rekey_temp(b)
                || resolve::is_temp(b)
            {
                return;
            }
            (self.visit)(&ZoneFile { dir, name, rel, ino }, root);
        }
    }
    walk(
        start,
        &mut V {
            in_zone,
            nested,
            is_root,
            skip_dir,
            visit,
            _f: std::marker::PhantomData,
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

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
        let open = |p: &Path| sys::open_at(sys::at_cwd(), p.as_os_str(), libc::O_PATH, 0).unwrap();
        let collect = |start: &Path, in_zone: bool, nested| {
            let mut out = Vec::new();
            let fd = open(start);
            zone_files(
                fd.as_fd(),
                in_zone,
                nested,
                &|d, _| has_marker(d),
                &|_| false,
                &mut |f, z| out.push((f.rel.display().to_string(), z.display().to_string())),
            );
            out
        };
        let all = collect(r, false, Nested::Descend);
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
        let outer = collect(&r.join("z"), true, Nested::Skip);
        assert_eq!(outer, vec![pair("b", ""), pair("sub/c", "")]);
    }
}
