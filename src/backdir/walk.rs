//! The one walker of backing trees: depth first, in name order, from a directory
//! descriptor to each entry through the descriptor of the directory that holds it.
//!
//! Directories are opened `O_NOFOLLOW` relative to their parent's descriptor, so a
//! directory swapped for a symlink while the walk runs is skipped, never followed, and
//! everything a visitor does with an entry can be done relative to the descriptor it
//! is handed. Only the directories with children still pending hold a descriptor
//! (one per level of the tree), so a wide directory costs no descriptor per child.

use super::sys;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// What kind of entry a directory listing says a name is (it may change before the
/// visitor opens it: open with `O_NOFOLLOW` and check).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// Anything else (FIFO, device, socket), or a kind the listing did not give.
    Other,
}

impl Kind {
    fn of(d_type: u8) -> Kind {
        match d_type {
            libc::DT_REG => Kind::File,
            libc::DT_DIR => Kind::Dir,
            libc::DT_LNK => Kind::Symlink,
            _ => Kind::Other,
        }
    }
}

/// A walk's callbacks. `Ctx` is what a directory passes down to its entries (the zone
/// it is in, say).
pub trait Visitor {
    /// What a directory hands its entries.
    type Ctx: Clone;
    /// Entering directory `dir` (at `rel` from the start; `parent` is `None` for the
    /// start itself): the context of its entries, or `None` to skip it.
    fn enter(&mut self, dir: BorrowedFd<'_>, rel: &Path, parent: Option<&Self::Ctx>) -> Option<Self::Ctx>;
    /// An entry of `dir` that is not a directory.
    fn entry(&mut self, dir: BorrowedFd<'_>, name: &OsStr, rel: &Path, kind: Kind, ino: u64, ctx: &Self::Ctx);
    /// A directory that could not be opened or listed (it is skipped).
    fn failed(&mut self, _rel: &Path, _e: &io::Error) {}
}

struct Pending<C> {
    parent: Rc<OwnedFd>,
    name: OsString,
    rel: PathBuf,
    ctx: C,
}

/// Walks the tree below directory `start` (any descriptor of it, `O_PATH` included).
pub fn walk<V: Visitor>(start: BorrowedFd<'_>, v: &mut V) {
    let dir = match sys::open_at(start, OsStr::new("."), libc::O_RDONLY | libc::O_DIRECTORY, 0) {
        Ok(d) => d,
        Err(e) => return v.failed(Path::new(""), &e),
    };
    let Some(ctx) = v.enter(dir.as_fd(), Path::new(""), None) else {
        return;
    };
    let mut stack = Vec::new();
    list(v, Rc::new(dir), PathBuf::new(), ctx, &mut stack);
    while let Some(p) = stack.pop() {
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_NONBLOCK;
        let dir = match sys::open_at(p.parent.as_fd(), &p.name, flags, 0) {
            Ok(d) => d,
            // gone, or no longer a directory (swapped for a symlink: ELOOP)
            Err(e) => {
                if !matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ELOOP | libc::ENOTDIR)) {
                    v.failed(&p.rel, &e);
                }
                continue;
            }
        };
        drop(p.parent);
        if let Some(ctx) = v.enter(dir.as_fd(), &p.rel, Some(&p.ctx)) {
            list(v, Rc::new(dir), p.rel, ctx, &mut stack);
        }
    }
}

/// Visits the entries of `dir`, pushing its subdirectories (reversed, so that they pop
/// in name order).
fn list<V: Visitor>(
    v: &mut V,
    dir: Rc<OwnedFd>,
    rel: PathBuf,
    ctx: V::Ctx,
    stack: &mut Vec<Pending<V::Ctx>>,
) {
    let mut entries = match sys::read_dir(dir.as_fd()) {
        Ok(e) => e,
        Err(e) => return v.failed(&rel, &e),
    };
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut dirs = Vec::new();
    for (name, ino, d_type) in entries {
        let kind = Kind::of(d_type);
        if kind == Kind::Dir {
            dirs.push(name);
        } else {
            v.entry(dir.as_fd(), &name, &rel.join(&name), kind, ino, &ctx);
        }
    }
    for name in dirs.into_iter().rev() {
        stack.push(Pending {
            parent: dir.clone(),
            rel: rel.join(&name),
            name,
            ctx: ctx.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Collect(Vec<String>);

    impl Visitor for Collect {
        type Ctx = usize;
        fn enter(&mut self, _: BorrowedFd<'_>, rel: &Path, parent: Option<&usize>) -> Option<usize> {
            if rel.ends_with("skip") {
                return None;
            }
            self.0.push(format!("dir {}", rel.display()));
            Some(parent.map_or(0, |d| d + 1))
        }
        fn entry(&mut self, _: BorrowedFd<'_>, _: &OsStr, rel: &Path, kind: Kind, _: u64, depth: &usize) {
            self.0.push(format!("{kind:?} {} at {depth}", rel.display()));
        }
    }

    #[test]
    fn depth_first_in_name_order_without_following_links() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        for d in ["b", "b/c", "a", "skip"] {
            std::fs::create_dir(r.join(d)).unwrap();
        }
        for f in ["b/c/f", "a/e", "z", "skip/hidden"] {
            std::fs::write(r.join(f), b"").unwrap();
        }
        std::os::unix::fs::symlink("/etc", r.join("b/link")).unwrap();
        let root = sys::open_at(sys::at_cwd(), r.as_os_str(), libc::O_PATH, 0).unwrap();
        let mut c = Collect(Vec::new());
        walk(root.as_fd(), &mut c);
        assert_eq!(
            c.0,
            [
                "dir ",
                "File z at 0",
                "dir a",
                "File a/e at 1",
                "dir b",
                "Symlink b/link at 1",
                "dir b/c",
                "File b/c/f at 2",
            ]
        );
    }
}
