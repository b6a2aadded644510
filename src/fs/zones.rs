//! Zones on a live mount: which directories are zone roots.
//!
//! The keystore's registry (authenticated by the master key) says which zones exist
//! and where their roots were last seen. At mount, and after every reload of the
//! keystore, each registered root is found in the backing dir and remembered by its
//! inode ([`ZoneRoots`]), so that a root stays a zone whatever happens to its marker;
//! see [`crate::zone::decide`]. The zone requests of the control socket are in
//! `zonereq`.

use super::core::Core;
use super::error::FsResult;
use super::names::shown;
use crate::backdir::resolve::open_beneath;
use crate::backdir::sys;
use crate::backdir::walk::{walk, Kind, Visitor};
use crate::keys::service::registry;
use crate::zone::walk::has_marker;
use crate::zone::{self, MarkerRead, Zone};
use parking_lot::RwLock;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The registered zone roots found in the backing dir: (st_dev, st_ino) of each root
/// directory to its zone id (hex).
#[derive(Default)]
pub struct ZoneRoots(pub(super) RwLock<HashMap<(u64, u64), String>>);

/// (st_dev, st_ino) of a descriptor's file.
pub(super) fn dev_ino(fd: BorrowedFd<'_>) -> std::io::Result<(u64, u64)> {
    let st = sys::stat_at(fd, OsStr::new(""))?;
    Ok((st.st_dev, st.st_ino))
}

/// Zone id (hex) to the places of its authentic markers: path from the backing root
/// and (st_dev, st_ino) of the directory.
type MarkerPlaces = HashMap<String, Vec<(PathBuf, (u64, u64))>>;

/// What [`Core::locate_zones`] found.
#[derive(Debug, Default)]
pub struct Located {
    /// Zones whose marker fails authentication (their files give EIO), each with the
    /// command that repairs it.
    pub warnings: Vec<String>,
    /// Registered zones whose root or marker is not where the registry says: mounting
    /// would lose track of them (refused, each with the command that repairs it).
    pub missing: Vec<String>,
}

impl Core {
    /// The zone marker in `dir`, checked against the keys' marker keys.
    pub(super) fn read_marker(&self, dir: BorrowedFd<'_>) -> MarkerRead {
        let mut out = None;
        self.keys
            .with_marker_keys(&mut |keys| out = Some(zone::marker::read_marker(dir, keys)));
        out.expect("the callback ran")
    }

    /// The zone whose root is the directory `dir` (backing inode `key`), if it is one.
    /// Broken zones are logged.
    pub(crate) fn dir_zone(&self, dir: BorrowedFd<'_>, key: (u64, u64)) -> Option<Arc<Zone>> {
        let marker = self.read_marker(dir);
        let mut decided = None;
        self.keys.with_registry(&mut |registry| {
            let roots = self.zone_roots.0.read();
            let here = roots
                .get(&key)
                .and_then(|id| registry.get_key_value(id))
                .map(|(id, e)| (id.as_str(), e));
            decided = zone::decide(marker.clone(), here, |id| registry.contains_key(id));
        });
        let z = decided?;
        if let Some(why) = &z.broken {
            log::error!(
                "{}: broken encryption zone: {why}; its files give EIO",
                sys::describe(dir)
            );
        }
        Some(Arc::new(z))
    }

    /// Shared storage: a directory whose marker names a zone this daemon's registry
    /// does not know may be a zone another host has just made, so the keystore is read
    /// again (at most once a second) before the directory's zone is decided; else the
    /// new zone would count as broken until the keystore watch caught up.
    pub(super) fn see_new_zone(&self, at: &super::names::At<'_>) {
        let Ok(fd) = at.open_path() else {
            return;
        };
        let MarkerRead::Valid(m) = self.read_marker(fd.as_fd()) else {
            return;
        };
        let mut known = false;
        self.keys
            .with_registry(&mut |r| known = r.contains_key(&m.id_hex()));
        if known {
            return;
        }
        {
            let mut last = self.zone_catch_up.lock();
            if last.is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(1)) {
                return;
            }
            *last = Some(std::time::Instant::now());
        }
        if let Err(e) = self.reload() {
            log::warn!("cannot re-read the keystore for a zone made elsewhere: {e}");
        }
    }

    /// Shared storage: before a name is added to directory `dir` that this daemon
    /// takes for a plain one, its marker is looked for: another host may have made it
    /// a zone since this daemon decided (the keystore watch catches up within a
    /// second, but a file made meanwhile would be stored in plaintext). With a marker
    /// the keystore is read again; if the directory is still no zone, EIO.
    pub(super) fn zone_made_elsewhere(&self, dir: &super::inode::Inode) -> super::error::FsResult<()> {
        if !self.shared || dir.zone().is_some() {
            return Ok(());
        }
        let fd = dir.fd()?;
        if matches!(self.read_marker(fd.as_fd()), MarkerRead::Absent) {
            return Ok(());
        }
        self.reload()?;
        if dir.zone().is_some() {
            return Ok(());
        }
        log::error!(
            "{}: a zone marker in a directory that is no zone here; nothing is created in it",
            sys::describe(fd.as_fd())
        );
        Err(super::error::errno::EIO)
    }

    /// Re-reads the keystore (the command line changed it) and finds the zones again.
    pub fn reload(&self) -> FsResult<()> {
        self.keys.reload()?;
        let located = self.locate_zones()?;
        for w in located.warnings.iter().chain(&located.missing) {
            log::error!("{w}");
        }
        Ok(())
    }

    /// Finds every registered zone's root in the backing dir (by its path in the
    /// registry, else by its marker wherever the root was moved) and remembers it by
    /// inode. Cached directory inodes of the roots get their zone decided again (a
    /// repaired zone works at once).
    pub fn locate_zones(&self) -> FsResult<Located> {
        let root = self.root_fd()?;
        let registry = registry(&*self.keys);
        let mut found: HashMap<(u64, u64), String> = HashMap::new();
        let mut pending = Vec::new();
        {
            for (id, e) in &registry {
                let fd = open_beneath(
                    root.as_fd(),
                    Path::new(&e.path),
                    libc::O_PATH | libc::O_DIRECTORY,
                    false,
                );
                let ok = fd.as_ref().is_ok_and(|fd| {
                    matches!(self.read_marker(fd.as_fd()),
                        MarkerRead::Valid(m) if &m.id_hex() == id && m.key == e.key)
                });
                match fd {
                    Ok(fd) if ok => {
                        found.insert(dev_ino(fd.as_fd())?, id.clone());
                    }
                    other => pending.push((id.clone(), e.clone(), other.ok())),
                }
            }
        }
        let mut out = Located::default();
        if !pending.is_empty() {
            let markers = self.markers_by_zone(root.as_fd());
            for (id, e, at_path) in pending {
                let elsewhere = markers.get(&id).map(Vec::as_slice).unwrap_or_default();
                match (at_path, elsewhere) {
                    // a directory is still at the registered path: the zone is there,
                    // and broken (a marker moved away is not followed): an authentic
                    // marker of another zone, or none, is not something to guess about
                    (Some(fd), _) => {
                        found.insert(dev_ino(fd.as_fd())?, id.clone());
                        match self.read_marker(fd.as_fd()) {
                            MarkerRead::Invalid(why) => out.warnings.push(format!(
                                "zone /{} (key {}): {why}; its files give EIO until the marker is restored \
                                 from a backup or written again with 'ezfs zone repair /{}'",
                                e.path, e.key, e.path
                            )),
                            _ => out.missing.push(format!(
                                "zone /{} (key {}, id {id}) has lost its marker; mounting would leave it \
                                 broken (new files there must not be stored in plaintext). Restore the \
                                 marker from a backup, or run 'ezfs zone repair /{}' (both as root, with \
                                 --backing BACKING)",
                                e.path, e.key, e.path
                            )),
                        }
                    }
                    // moved as a whole (marker included) while not mounted
                    (None, [(rel, key)]) => {
                        let rel_s = rel.to_string_lossy().into_owned();
                        log::info!("zone {id} (key {}) moved from /{} to /{rel_s}", e.key, e.path);
                        self.keys.register_zone(&id, &e.key, &rel_s)?;
                        found.insert(*key, id.clone());
                    }
                    (None, []) => out.missing.push(format!(
                        "zone {id} (key {}) is gone: no directory at /{} and no marker of it anywhere. If it \
                         was deleted, run 'ezfs zone forget {id}'; if it was moved without its marker, run \
                         'ezfs zone repair --id {id} NEWPATH' (both as root, with --backing BACKING)",
                        e.key, e.path
                    )),
                    (None, many) => out.missing.push(format!(
                        "zone {id} (key {}) left /{} and its marker is now in {} places ({}); remove the \
                         copies' markers, or run 'ezfs zone repair --id {id} PATH' for the right one",
                        e.key,
                        e.path,
                        many.len(),
                        many.iter().map(|(p, _)| shown(p)).collect::<Vec<_>>().join(", ")
                    )),
                }
            }
        }
        *self.zone_roots.0.write() = found;
        self.refresh_cached_roots();
        Ok(out)
    }

    /// Every authentic marker in the backing dir, by zone id: (path, inode of the root).
    fn markers_by_zone(&self, root: BorrowedFd<'_>) -> MarkerPlaces {
        struct Markers<'a> {
            core: &'a Core,
            out: MarkerPlaces,
        }
        impl Visitor for Markers<'_> {
            type Ctx = ();
            fn enter(&mut self, dir: BorrowedFd<'_>, rel: &Path, _: Option<&()>) -> Option<()> {
                if rel == Path::new(crate::EZFS_DIR) {
                    return None;
                }
                if has_marker(dir) {
                    let read = self.core.read_marker(dir);
                    if let (MarkerRead::Valid(m), Ok(key)) = (read, dev_ino(dir)) {
                        self.out
                            .entry(m.id_hex())
                            .or_default()
                            .push((rel.to_path_buf(), key));
                    }
                }
                Some(())
            }
            fn entry(&mut self, _: BorrowedFd<'_>, _: &OsStr, _: &Path, _: Kind, _: u64, _: &()) {}
        }
        let mut v = Markers {
            core: self,
            out: HashMap::new(),
        };
        walk(root, &mut v);
        v.out
    }

    /// Decides the zone of every cached zone-root directory again (after the registry
    /// or a marker changed), and hands a changed zone to every inode that shared the
    /// old one.
    fn refresh_cached_roots(&self) {
        let roots: Vec<(u64, u64)> = self.zone_roots.0.read().keys().copied().collect();
        for key in roots {
            let Some(ino) = self.inodes.find_and_ref(key) else {
                continue;
            };
            if let Ok(fd) = ino.fd() {
                let new = self.dir_zone(fd.as_fd(), key);
                match (ino.zone(), new) {
                    (Some(old), Some(new)) if *old != *new => self.inodes.replace_zone(&old, &new),
                    // a root the kernel knew before it was found (the mount's root)
                    (None, Some(new)) => *ino.zone.write() = Some(new),
                    _ => {}
                }
            }
            self.inodes.forget(ino.id, 1);
        }
    }

    /// Gives the cached inode of directory `key` (if the kernel knows it) the zone `zone`.
    pub(super) fn set_cached_zone(&self, key: (u64, u64), zone: Arc<Zone>) {
        if let Some(ino) = self.inodes.find_and_ref(key) {
            *ino.zone.write() = Some(zone);
            self.inodes.forget(ino.id, 1);
        }
    }

    /// Whether a rename could move a registered zone root (the registry has any).
    pub(super) fn zones_may_move(&self) -> bool {
        let mut any = false;
        self.keys.with_registry(&mut |r| any = !r.is_empty());
        any
    }

    /// After a rename of `from` to `to` (or their exchange): the registered zones at or
    /// below either path get their new paths.
    pub(super) fn note_moved_zones(&self, from: &Path, to: &Path, exchange: bool) {
        let moved = |p: &Path| -> Option<PathBuf> {
            if let Ok(rest) = p.strip_prefix(from) {
                return Some(to.join(rest));
            }
            if exchange {
                if let Ok(rest) = p.strip_prefix(to) {
                    return Some(from.join(rest));
                }
            }
            None
        };
        let changes: Vec<(String, String, String)> = registry(&*self.keys)
            .iter()
            .filter_map(|(id, z)| {
                let new = moved(Path::new(&z.path))?;
                Some((id.clone(), z.key.clone(), new.to_string_lossy().into_owned()))
            })
            .collect();
        if changes.is_empty() {
            return;
        }
        if let Err(e) = self.keys.move_zones(&changes) {
            log::warn!("zones moved by a rename, but the keystore was not updated: {e}");
        }
    }

    /// A zone root was removed (`rmdir` of the directory at backing inode `key`): the
    /// registry forgets it.
    pub(super) fn forget_zone_root(&self, key: (u64, u64)) {
        let Some(id) = self.zone_roots.0.write().remove(&key) else {
            return;
        };
        if let Err(e) = self.keys.unregister_zone(&id) {
            log::error!("zone {id} removed, but the keystore could not forget it: {e}");
        }
    }

    /// Whether the directory at backing inode `key` is a registered zone root.
    pub(super) fn is_zone_root(&self, key: (u64, u64)) -> bool {
        self.zone_roots.0.read().contains_key(&key)
    }
}
