//! Zones on a live mount: which directories are zone roots, and the zone requests of
//! the control socket (create, info, list).
//!
//! The keystore's registry (authenticated by the master key) says which zones exist
//! and where their roots were last seen. At mount, and after every reload of the
//! keystore, each registered root is found in the backing dir and remembered by its
//! inode ([`ZoneRoots`]), so that a root stays a zone whatever happens to its marker;
//! see [`crate::zone::decide`]. Paths in requests are relative to the mount root and
//! are resolved as the caller (see [`Caller::run_as`]): beneath the backing root,
//! through no symlink, with the caller's permissions.

use super::{inode::ROOT, Core};
use crate::backdir::resolve::{self, open_beneath};
use crate::backdir::walk::{walk, Kind, Visitor};
use crate::backdir::{sys, Caller};
use crate::format::header::{hex, read_header, SUITE_NAME};
use crate::keys::KeyProvider;
use crate::zone::usage::scan_zone;
use crate::zone::walk::has_marker;
use crate::zone::{self, MarkerRead, Zone, ZoneMarker, MARKER_FILE};
use parking_lot::RwLock;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// One zone, as `zone list` shows it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ZoneSummary {
    /// Path of the zone root relative to the mount root.
    pub path: String,
    pub zone_id: String,
    pub key: String,
    /// Newest version of the zone key (what new files get).
    pub key_version: u32,
    /// Regular files in the zone (not counting nested zones) that the caller can reach.
    pub files: u64,
    /// How many of them use each "key@version".
    #[serde(default)]
    pub files_by_version: BTreeMap<String, u64>,
    /// Why the zone cannot be used (its files give EIO), if it cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broken: Option<String>,
}

/// What `zone info` shows for a path (HDFS's getFileEncryptionInfo).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct PathInfo {
    pub path: String,
    /// Zone root relative to the mount root.
    pub zone: String,
    pub zone_id: String,
    pub key: String,
    /// The key version this file's EDEK is wrapped with (for a directory: the newest).
    pub key_version: u32,
    pub cipher_suite: String,
    /// Hex; absent for directories and for empty files that have no header yet.
    pub edek: Option<String>,
    pub file_id: Option<String>,
    /// For a zone root: how many of the zone's files use each "key@version".
    #[serde(default)]
    pub files_by_version: BTreeMap<String, u64>,
}

/// One file of a zone and the key version its EDEK is wrapped with (`zone files`).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct FileUse {
    /// Path from the mount root.
    pub path: String,
    pub key: String,
    /// 0 for an empty file without a header (it gets the newest version when written).
    pub key_version: u32,
}

/// The registered zone roots found in the backing dir: (st_dev, st_ino) of each root
/// directory to its zone id (hex).
#[derive(Default)]
pub struct ZoneRoots(RwLock<HashMap<(u64, u64), String>>);

/// (st_dev, st_ino) of a descriptor's file.
fn dev_ino(fd: BorrowedFd<'_>) -> std::io::Result<(u64, u64)> {
    let st = sys::stat_at(fd, OsStr::new(""))?;
    Ok((st.st_dev, st.st_ino))
}

/// A path from the mount root as `zone list` shows it: "/dir".
fn shown(rel: &Path) -> String {
    format!("/{}", rel.display())
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
    /// The backing root's descriptor.
    pub(crate) fn root_fd(&self) -> Result<super::inode::InodeFd, String> {
        self.inodes
            .get(ROOT)
            .ok_or("the backing root is gone")?
            .fd()
            .map_err(|e| {
                format!(
                    "the backing root: {}",
                    std::io::Error::from_raw_os_error(e.code())
                )
            })
    }

    /// The zone whose root is the directory `dir` (backing inode `key`), if it is one.
    /// Broken zones are logged.
    pub(crate) fn dir_zone(&self, dir: BorrowedFd<'_>, key: (u64, u64)) -> Option<Arc<Zone>> {
        let store = self.keys.store().read();
        let marker = zone::marker::read_marker(dir, &store.marker_keys());
        let registry = &store.body().zones;
        let roots = self.zone_roots.0.read();
        let here = roots
            .get(&key)
            .and_then(|id| registry.get_key_value(id))
            .map(|(id, e)| (id.as_str(), e));
        let z = zone::decide(marker, here, |id| registry.contains_key(id))?;
        if let Some(why) = &z.broken {
            log::error!(
                "{}: broken encryption zone: {why}; its files give EIO",
                sys::describe(dir)
            );
        }
        Some(Arc::new(z))
    }

    /// Re-reads the keystore (the command line changed it) and finds the zones again.
    pub fn reload(&self) -> Result<(), String> {
        self.keys.reload().map_err(|e| e.to_string())?;
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
    pub fn locate_zones(&self) -> Result<Located, String> {
        let root = self.root_fd()?;
        let registry = self.keys.store().read().body().zones.clone();
        let mut found: HashMap<(u64, u64), String> = HashMap::new();
        let mut pending = Vec::new();
        {
            let store = self.keys.store().read();
            for (id, e) in &registry {
                let fd = open_beneath(
                    root.as_fd(),
                    Path::new(&e.path),
                    libc::O_PATH | libc::O_DIRECTORY,
                    false,
                );
                let ok = fd.as_ref().is_ok_and(|fd| {
                    matches!(zone::marker::read_marker(fd.as_fd(), &store.marker_keys()),
                        MarkerRead::Valid(m) if &m.id_hex() == id && m.key == e.key)
                });
                match fd {
                    Ok(fd) if ok => {
                        found.insert(dev_ino(fd.as_fd()).map_err(|e| e.to_string())?, id.clone());
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
                        found.insert(dev_ino(fd.as_fd()).map_err(|e| e.to_string())?, id.clone());
                        let store = self.keys.store().read();
                        match zone::marker::read_marker(fd.as_fd(), &store.marker_keys()) {
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
                        self.keys
                            .store()
                            .write()
                            .register_zone(&id, &e.key, &rel_s)
                            .map_err(|e| e.to_string())?;
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
                    let read = zone::marker::read_marker(dir, &self.core.keys.store().read().marker_keys());
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

    /// The directory at `rel` from the mount root, resolved as `caller` would through
    /// the mount: beneath the backing root, through no symlink, with the caller's
    /// permissions; reserved names (the marker, `.ezfs`) are refused.
    pub fn resolve_as(&self, caller: &Caller, rel: &str) -> Result<(OwnedFd, PathBuf), String> {
        let rel = normalize(rel)?;
        let root = self.root_fd()?;
        let fail = |e: std::io::Error| match e.raw_os_error() {
            Some(libc::ELOOP) => format!("{}: a symbolic link is in the way", shown(&rel)),
            Some(libc::EXDEV) => format!("{}: not inside the mount", shown(&rel)),
            _ => format!("{}: {}", shown(&rel), crate::text::io_words(&e)),
        };
        // the backing root is private (0700): the mount's root shows its own mode, and
        // that is what the caller is checked against for it
        let mut parts = rel.components();
        let Some(first) = parts.next() else {
            let fd = sys::open_at(root.as_fd(), OsStr::new("."), libc::O_PATH, 0).map_err(fail)?;
            return Ok((fd, rel));
        };
        if !self.root_searchable_by(caller) {
            return Err(fail(std::io::Error::from_raw_os_error(libc::EACCES)));
        }
        let top = sys::open_at(
            root.as_fd(),
            first.as_os_str(),
            libc::O_PATH | libc::O_NOFOLLOW,
            0,
        )
        .map_err(fail)?;
        let rest = parts.as_path().to_path_buf();
        if rest.as_os_str().is_empty() {
            if sys::stat_at(top.as_fd(), OsStr::new(""))
                .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFLNK)
            {
                return Err(fail(std::io::Error::from_raw_os_error(libc::ELOOP)));
            }
            return Ok((top, rel));
        }
        let fd = caller
            .run_as(|| open_beneath(top.as_fd(), &rest, libc::O_PATH, false))
            .map_err(|e| e.to_string())?
            .map_err(fail)?;
        Ok((fd, rel))
    }

    /// Whether `caller` may look names up in the mount's root, by the mode it shows.
    fn root_searchable_by(&self, caller: &Caller) -> bool {
        if caller.is_root() {
            return true;
        }
        let Ok(st) = self
            .root_fd()
            .and_then(|fd| sys::stat_at(fd.as_fd(), OsStr::new("")).map_err(|e| e.to_string()))
        else {
            return false;
        };
        let mode = self.root_mode.load(std::sync::atomic::Ordering::Relaxed);
        let bits = if caller.uid == st.st_uid {
            mode >> 6
        } else if caller.gid == st.st_gid || caller.groups().contains(&st.st_gid) {
            mode >> 3
        } else {
            mode
        };
        bits & 1 != 0
    }

    /// The zone root at or above `rel` (resolved as `caller`): its path and zone.
    fn zone_root_of(&self, caller: &Caller, rel: &Path) -> Result<Option<(PathBuf, Arc<Zone>)>, String> {
        for dir in rel.ancestors() {
            let (fd, _) = self.resolve_as(caller, &dir.to_string_lossy())?;
            let key = dev_ino(fd.as_fd()).map_err(|e| e.to_string())?;
            if let Some(z) = self.dir_zone(fd.as_fd(), key) {
                return Ok(Some((dir.to_path_buf(), z)));
            }
        }
        Ok(None)
    }

    /// Makes the empty directory `rel` a zone under key `key`. `caller` must be root or
    /// own the directory, and may use the key.
    pub fn zone_create(&self, rel: &str, key: &str, caller: &Caller) -> Result<ZoneSummary, String> {
        if self.read_only {
            return Err("the mount is read-only".into());
        }
        let (dir, rel) = self.resolve_as(caller, rel)?;
        let at = shown(&rel);
        let st = sys::stat_at(dir.as_fd(), OsStr::new("")).map_err(|e| format!("{at}: {e}"))?;
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            return Err(format!("{at} is not a directory"));
        }
        if !caller.is_root() && st.st_uid != caller.uid {
            return Err(format!("{at}: only its owner or root may make it a zone"));
        }
        self.check_key_use(caller, key)?;
        let version = self.keys.current_version(key).map_err(|e| e.to_string())?;
        let key_ino = (st.st_dev, st.st_ino);
        if self.zone_roots.0.read().contains_key(&key_ino) || has_marker(dir.as_fd()) {
            return Err(format!("{at} is already an encryption zone"));
        }
        let in_root = rel.as_os_str().is_empty();
        let is_empty = || {
            sys::read_dir(dir.as_fd())
                .map(|v| {
                    v.iter()
                        .all(|(n, _, _)| zone::is_reserved(n.as_encoded_bytes(), in_root))
                })
                .unwrap_or(false)
        };
        let not_empty = || format!("{at} is not empty; a zone can only be created on an empty directory");
        // creates wait while the directory becomes a zone: none can slip in as plaintext
        let _gate = self.zone_gate.write();
        if !is_empty() {
            return Err(not_empty());
        }
        let marker = ZoneMarker::new(key);
        let id = marker.id_hex();
        let zone = Arc::new(Zone::new(marker.zone_id, key));
        // registered first: from here on the directory is a zone whatever its marker says
        self.keys
            .store()
            .write()
            .register_zone(&id, key, &rel.to_string_lossy())
            .map_err(|e| e.to_string())?;
        self.zone_roots.0.write().insert(key_ino, id.clone());
        let bytes = marker.encode(self.keys.store().read().master());
        if let Err(e) = resolve::replace_at(dir.as_fd(), OsStr::new(MARKER_FILE), &bytes, 0o644) {
            self.zone_roots.0.write().remove(&key_ino);
            let _ = self.keys.store().write().unregister_zone(&id);
            return Err(format!("{at}: cannot write the zone marker: {e}"));
        }
        self.set_cached_zone(key_ino, zone);
        Ok(ZoneSummary {
            path: at,
            zone_id: id,
            key: key.into(),
            key_version: version,
            files: 0,
            files_by_version: BTreeMap::new(),
            broken: None,
        })
    }

    /// Refuses unless `caller` may use key `key` (root and the key's owner always may).
    fn check_key_use(&self, caller: &Caller, key: &str) -> Result<(), String> {
        let _ = self.keys.current_version(key).map_err(|e| e.to_string())?;
        let store = self.keys.store().read();
        let k = store.key(key).map_err(|e| e.to_string())?;
        if k.allows(caller.uid, caller.gid, || caller.groups()) {
            Ok(())
        } else {
            Err(format!("uid {} may not use key {key}", caller.uid))
        }
    }

    /// Gives the cached inode of directory `key` (if the kernel knows it) the zone `zone`.
    fn set_cached_zone(&self, key: (u64, u64), zone: Arc<Zone>) {
        if let Some(ino) = self.inodes.find_and_ref(key) {
            *ino.zone.write() = Some(zone);
            self.inodes.forget(ino.id, 1);
        }
    }

    /// Encryption details of a file or directory in a zone.
    pub fn zone_info(&self, rel: &str, caller: &Caller) -> Result<PathInfo, String> {
        let (fd, rel) = self.resolve_as(caller, rel)?;
        let at = shown(&rel);
        let st = sys::stat_at(fd.as_fd(), OsStr::new("")).map_err(|e| format!("{at}: {e}"))?;
        let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        let start = if is_dir {
            rel.as_path()
        } else {
            rel.parent().unwrap_or(Path::new(""))
        };
        let (root, zone) = self
            .zone_root_of(caller, start)?
            .ok_or_else(|| format!("{at} is not in an encryption zone"))?;
        if let Some(why) = &zone.broken {
            return Err(format!("zone {}: {why}", shown(&root)));
        }
        let mut info = PathInfo {
            path: at.clone(),
            zone: shown(&root),
            zone_id: hex(&zone.id),
            key: zone.key.clone(),
            key_version: self.keys.current_version(&zone.key).unwrap_or(0),
            cipher_suite: SUITE_NAME.into(),
            edek: None,
            file_id: None,
            files_by_version: BTreeMap::new(),
        };
        if is_dir && root == rel {
            let u = caller
                .run_as(|| scan_zone(fd.as_fd(), &rel))
                .map_err(|e| e.to_string())?;
            info.files_by_version = u.zones.into_values().next().unwrap_or_default();
        }
        if st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_size > 0 {
            let f = sys::reopen(fd.as_fd(), libc::O_RDONLY | libc::O_NONBLOCK)
                .map_err(|e| format!("{at}: {e}"))?;
            let h = read_header(&f).map_err(|e| format!("{at}: {e}"))?;
            info.key = h.key_name.clone();
            info.key_version = h.key_version;
            info.edek = Some(hex(&h.edek));
            info.file_id = Some(hex(&h.file_id));
        }
        Ok(info)
    }

    /// The files of the zone rooted at `rel` (nested zones excluded) that `caller` can
    /// reach, with the key version each uses; with `version`, only those on it.
    pub fn zone_file_list(
        &self,
        rel: &str,
        version: Option<u32>,
        caller: &Caller,
    ) -> Result<Vec<FileUse>, String> {
        let (fd, rel) = self.resolve_as(caller, rel)?;
        let key = dev_ino(fd.as_fd()).map_err(|e| e.to_string())?;
        match self.dir_zone(fd.as_fd(), key).filter(|_| self.is_zone_root(key)) {
            Some(z) if z.broken.is_none() => {}
            Some(z) => return Err(format!("{}: {}", shown(&rel), z.broken.as_deref().unwrap_or(""))),
            None => return Err(format!("{} is not an encryption zone root", shown(&rel))),
        }
        let list = caller
            .run_as(|| {
                let mut out = Vec::new();
                let top = rel.as_os_str().is_empty();
                crate::zone::walk::zone_files(
                    fd.as_fd(),
                    true,
                    crate::zone::walk::Nested::Skip,
                    &|d, _| has_marker(d),
                    &|r| top && r == Path::new(crate::EZFS_DIR),
                    &mut |f, _| {
                        let Ok(file) = crate::zone::usage::open_regular(f.dir, f.name) else {
                            return;
                        };
                        let empty = file.metadata().is_ok_and(|m| m.len() == 0);
                        let (key, v) = match read_header(&file) {
                            Ok(h) => (h.key_name, h.key_version),
                            Err(_) if empty => (String::new(), 0),
                            Err(_) => return,
                        };
                        if version.is_none_or(|want| want == v) {
                            out.push(FileUse {
                                path: shown(&rel.join(f.rel)),
                                key,
                                key_version: v,
                            });
                        }
                    },
                );
                out
            })
            .map_err(|e| e.to_string())?;
        Ok(list)
    }

    /// Every registered zone whose root `caller` can reach, with its files, in path
    /// order.
    pub fn zone_list(&self, caller: &Caller) -> Vec<ZoneSummary> {
        self.zones_visible(caller, true)
    }

    /// Every registered zone whose root `caller` can reach; with `count`, its files are
    /// counted (those the caller can reach) and their headers read for key versions.
    pub fn zones_visible(&self, caller: &Caller, count: bool) -> Vec<ZoneSummary> {
        let registry = self.keys.store().read().body().zones.clone();
        let mut out: Vec<ZoneSummary> = Vec::new();
        for (id, e) in registry {
            let Ok((fd, rel)) = self.resolve_as(caller, &e.path) else {
                continue;
            };
            let key = dev_ino(fd.as_fd()).ok();
            let zone = key.and_then(|k| self.dir_zone(fd.as_fd(), k));
            let mut z = ZoneSummary {
                path: shown(&rel),
                zone_id: id,
                key_version: self.keys.current_version(&e.key).unwrap_or(0),
                key: e.key,
                files: 0,
                files_by_version: BTreeMap::new(),
                broken: match zone {
                    Some(z) => z.broken.clone(),
                    None => Some("not found at its registered path".into()),
                },
            };
            if count {
                if let Ok(u) = caller.run_as(|| scan_zone(fd.as_fd(), &rel)) {
                    z.files = u.empty + u.unreadable + u.zones.values().flat_map(|m| m.values()).sum::<u64>();
                    z.files_by_version = u.zones.into_values().next().unwrap_or_default();
                }
            }
            out.push(z);
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out
    }

    /// Whether a rename could move a registered zone root (the registry has any).
    pub(super) fn zones_may_move(&self) -> bool {
        !self.keys.store().read().body().zones.is_empty()
    }

    /// The path of `dir/name` from the backing root, as the registry stores paths.
    pub(super) fn rel_of(&self, dir: &super::inode::Inode, name: &OsStr) -> Option<PathBuf> {
        let p = sys::path_of(dir.fd().ok()?.as_fd()).ok()?;
        Some(Path::new(&self.relative(&p)).join(name))
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
        let changes: Vec<(String, String, String)> = self
            .keys
            .store()
            .read()
            .body()
            .zones
            .iter()
            .filter_map(|(id, z)| {
                let new = moved(Path::new(&z.path))?;
                Some((id.clone(), z.key.clone(), new.to_string_lossy().into_owned()))
            })
            .collect();
        if changes.is_empty() {
            return;
        }
        if let Err(e) = self.keys.store().write().move_zones(&changes) {
            log::warn!("zones moved by a rename, but the keystore was not updated: {e}");
        }
    }

    /// A zone root was removed (`rmdir` of the directory at backing inode `key`): the
    /// registry forgets it.
    pub(super) fn forget_zone_root(&self, key: (u64, u64)) {
        let Some(id) = self.zone_roots.0.write().remove(&key) else {
            return;
        };
        if let Err(e) = self.keys.store().write().unregister_zone(&id) {
            log::error!("zone {id} removed, but the keystore could not forget it: {e}");
        }
    }

    /// Whether the directory at backing inode `key` is a registered zone root.
    pub(super) fn is_zone_root(&self, key: (u64, u64)) -> bool {
        self.zone_roots.0.read().contains_key(&key)
    }

    /// A backing path relative to the backing root, as the registry stores it.
    pub fn relative(&self, p: &Path) -> String {
        p.strip_prefix(&self.backing)
            .unwrap_or(p)
            .to_string_lossy()
            .into_owned()
    }
}

/// A request's path from the mount root, checked: no `..`, no reserved name, and not
/// `.ezfs` at the top.
pub fn normalize(rel: &str) -> Result<PathBuf, String> {
    let rel = Path::new(rel.trim_start_matches('/'));
    let mut out = PathBuf::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) if !zone::is_reserved(n.as_encoded_bytes(), out.as_os_str().is_empty()) => {
                out.push(n)
            }
            Component::CurDir => {}
            _ => {
                let s = crate::text::shorten(&rel.display().to_string(), 200);
                return Err(format!("invalid path '{s}' in the mount"));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_paths_are_checked() {
        assert_eq!(normalize("/a/./b").unwrap(), Path::new("a/b"));
        assert_eq!(normalize("").unwrap(), Path::new(""));
        for bad in [
            "../x",
            "a/../../b",
            "a/.ezfs-zone",
            ".ezfs/keystore.json",
            "a/.ezfs-tmp.1",
        ] {
            assert!(normalize(bad).is_err(), "{bad}");
        }
        assert!(normalize("a/.ezfs").is_ok(), ".ezfs is reserved only at the top");
        let long = "x\n".repeat(3000);
        let e = normalize(&format!("../{long}")).unwrap_err();
        assert!(e.len() < 300 && !e.contains('\n'), "{e}");
    }
}
