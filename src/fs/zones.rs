//! Zone management on a live mount (create, info, list) and the zone check at mount
//! time. The control socket calls these; paths are relative to the backing root.

use super::Core;
use crate::format::header::{hex, read_header, SUITE_NAME};
use crate::keys::KeyProvider;
use crate::zone::{Zone, ZoneMarker, MARKER_FILE};
use serde::Serialize;
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
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
    /// Regular files in the zone (not counting nested zones).
    pub files: u64,
    /// How many of them use each "key@version".
    #[serde(default)]
    pub files_by_version: BTreeMap<String, u64>,
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

fn walk(dir: &Path, f: &mut dyn FnMut(&Path, &std::fs::Metadata)) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        f(&p, &m);
        if m.is_dir() {
            walk(&p, f);
        }
    }
}

impl Core {
    /// A backing path for `rel`, refusing `..`, reserved names and `.ezfs`.
    pub fn resolve(&self, rel: &str) -> Result<PathBuf, String> {
        let rel = Path::new(rel.trim_start_matches('/'));
        let mut first = true;
        for c in rel.components() {
            match c {
                Component::Normal(n) if n != MARKER_FILE && !(first && n == crate::EZFS_DIR) => {}
                Component::CurDir => {}
                _ => return Err(format!("invalid path '{}' in the mount", rel.display())),
            }
            first = false;
        }
        Ok(self.backing.join(rel))
    }

    fn mount_rel(&self, p: &Path) -> String {
        format!("/{}", self.relative(p))
    }

    fn marker_at(&self, dir: &Path) -> Option<Result<ZoneMarker, String>> {
        let bytes = std::fs::read(dir.join(MARKER_FILE)).ok()?;
        Some(ZoneMarker::decode(&bytes, self.keys.store().read().master()).map_err(|e| e.to_string()))
    }

    /// Gives the cached inode of directory `dir` (if the kernel knows it) the zone `zone`.
    fn set_cached_zone(&self, dir: &Path, zone: Option<Arc<Zone>>) {
        if let Ok(m) = std::fs::symlink_metadata(dir) {
            if let Some(ino) = self.inodes.find_and_ref((m.dev(), m.ino())) {
                *ino.zone.write() = zone;
                self.inodes.forget(ino.id, 1);
            }
        }
    }

    /// Makes the empty directory `rel` a zone under key `key`. `caller` must be root
    /// or own the directory.
    pub fn zone_create(&self, rel: &str, key: &str, caller: u32) -> Result<ZoneSummary, String> {
        if self.read_only {
            return Err("the mount is read-only".into());
        }
        let version = self.keys.current_version(key).map_err(|e| e.to_string())?;
        let dir = self.resolve(rel)?;
        let shown = self.mount_rel(&dir);
        let meta = std::fs::symlink_metadata(&dir).map_err(|e| format!("{shown}: {e}"))?;
        if !meta.is_dir() {
            return Err(format!("{shown} is not a directory"));
        }
        if caller != 0 && meta.uid() != caller {
            return Err(format!("{shown}: only its owner or root may make it a zone"));
        }
        let is_empty = || {
            std::fs::read_dir(&dir)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false)
        };
        if self.marker_at(&dir).is_some() {
            return Err(format!("{shown} is already an encryption zone"));
        }
        if !is_empty() {
            return Err(format!(
                "{shown} is not empty; a zone can only be created on an empty directory"
            ));
        }
        let marker = ZoneMarker::new(key);
        let zone = Arc::new(Zone {
            id: marker.zone_id,
            key: key.into(),
            broken: None,
        });
        let old_zone = self.enclosing_zone(&dir);
        self.set_cached_zone(&dir, Some(zone.clone()));
        let bytes = marker.encode(self.keys.store().read().master());
        let marker_path = dir.join(MARKER_FILE);
        crate::keys::atomic::write_file(&marker_path, &bytes, 0o644).map_err(|e| format!("{shown}: {e}"))?;
        self.set_cached_zone(&dir, Some(zone.clone()));
        // a file created meanwhile would be plaintext in a zone: undo
        let only_marker = std::fs::read_dir(&dir).map(|d| d.count() == 1).unwrap_or(false);
        if !only_marker {
            let _ = std::fs::remove_file(&marker_path);
            self.set_cached_zone(&dir, old_zone);
            return Err(format!(
                "{shown} is not empty; a zone can only be created on an empty directory"
            ));
        }
        self.keys
            .store()
            .write()
            .register_zone(&marker.id_hex(), key, &self.relative(&dir))
            .map_err(|e| e.to_string())?;
        Ok(ZoneSummary {
            path: shown,
            zone_id: marker.id_hex(),
            key: key.into(),
            key_version: version,
            files: 0,
            files_by_version: BTreeMap::new(),
        })
    }

    /// The zone a directory's contents belonged to before it became a zone root.
    fn enclosing_zone(&self, dir: &Path) -> Option<Arc<Zone>> {
        let (_, m) = self.zone_root_of(dir.parent()?)?;
        Some(Arc::new(match m {
            Ok(m) => Zone {
                id: m.zone_id,
                key: m.key,
                broken: None,
            },
            Err(why) => Zone {
                id: [0xff; 16],
                key: String::new(),
                broken: Some(why),
            },
        }))
    }

    /// The closest directory at or above `p` (within the backing dir) with a marker.
    pub(super) fn zone_root_of(&self, p: &Path) -> Option<(PathBuf, Result<ZoneMarker, String>)> {
        let mut cur = Some(p);
        while let Some(d) = cur {
            if !d.starts_with(&self.backing) {
                return None;
            }
            if let Some(m) = self.marker_at(d) {
                return Some((d.to_path_buf(), m));
            }
            cur = d.parent();
        }
        None
    }

    /// Encryption details of a file or directory in a zone.
    pub fn zone_info(&self, rel: &str) -> Result<PathInfo, String> {
        let p = self.resolve(rel)?;
        let shown = self.mount_rel(&p);
        let meta = std::fs::symlink_metadata(&p).map_err(|e| format!("{shown}: {e}"))?;
        let start = if meta.is_dir() {
            p.as_path()
        } else {
            p.parent().unwrap_or(&p)
        };
        let (root, marker) = self
            .zone_root_of(start)
            .ok_or_else(|| format!("{shown} is not in an encryption zone"))?;
        let marker = marker.map_err(|e| format!("zone {}: {e}", self.mount_rel(&root)))?;
        let mut info = PathInfo {
            path: shown.clone(),
            zone: self.mount_rel(&root),
            zone_id: marker.id_hex(),
            key: marker.key.clone(),
            key_version: self.keys.current_version(&marker.key).unwrap_or(0),
            cipher_suite: SUITE_NAME.into(),
            edek: None,
            file_id: None,
            files_by_version: BTreeMap::new(),
        };
        if meta.is_dir() && root == p {
            let u = crate::zone::usage::scan_zone(&self.backing, &root);
            info.files_by_version = u.zones.into_values().next().unwrap_or_default();
        }
        if meta.is_file() && meta.len() > 0 {
            let f = std::fs::File::open(&p).map_err(|e| format!("{shown}: {e}"))?;
            let h = read_header(&f).map_err(|e| format!("{shown}: {e}"))?;
            info.key = h.key_name.clone();
            info.key_version = h.key_version;
            info.edek = Some(hex(&h.edek));
            info.file_id = Some(hex(&h.file_id));
        }
        Ok(info)
    }

    /// Every zone in the backing dir, found by walking it (the markers are the truth);
    /// stale paths in the keystore's registry are refreshed on the way.
    pub fn zone_list(&self) -> Vec<ZoneSummary> {
        self.zones_found(true)
    }

    /// Every zone; with `by_version`, each file's header is read to count key versions.
    pub(super) fn zones_found(&self, by_version: bool) -> Vec<ZoneSummary> {
        let mut zones: Vec<(PathBuf, ZoneSummary)> = Vec::new();
        let ezfs = self.backing.join(crate::EZFS_DIR);
        walk(&self.backing, &mut |p, m| {
            if p.starts_with(&ezfs) {
                return;
            }
            if m.is_dir() {
                if let Some(Ok(marker)) = self.marker_at(p) {
                    zones.push((
                        p.to_path_buf(),
                        ZoneSummary {
                            path: self.mount_rel(p),
                            zone_id: marker.id_hex(),
                            key_version: self.keys.current_version(&marker.key).unwrap_or(0),
                            key: marker.key,
                            files: 0,
                            files_by_version: BTreeMap::new(),
                        },
                    ));
                }
            } else if m.is_file()
                && p.file_name()
                    .is_some_and(|n| n != MARKER_FILE && !crate::zone::is_rekey_temp(n.as_encoded_bytes()))
            {
                // the closest zone root above the file: the longest matching prefix
                if let Some(z) = zones
                    .iter_mut()
                    .filter(|(root, _)| p.starts_with(root))
                    .max_by_key(|(r, _)| r.as_os_str().len())
                {
                    z.1.files += 1;
                }
            }
        });
        if by_version {
            let usage = crate::zone::usage::scan(&self.backing);
            for (root, z) in &mut zones {
                z.files_by_version = usage.zones.get(&self.relative(root)).cloned().unwrap_or_default();
            }
        }
        let registry = self.keys.store().read().body().zones.clone();
        for (root, z) in &zones {
            let rel = self.relative(root);
            if registry.get(&z.zone_id).is_some_and(|e| e.path != rel) {
                let _ = self.keys.store().write().register_zone(&z.zone_id, &z.key, &rel);
            }
        }
        zones.into_iter().map(|(_, z)| z).collect()
    }

    /// At mount: every zone the keystore knows must still have its marker, or new files
    /// in that directory would be written in plaintext. A zone whose directory is gone
    /// is forgotten with a warning; one whose directory lost its marker stops the mount.
    pub fn check_zones(&self) -> Result<(), String> {
        let registry = self.keys.store().read().body().zones.clone();
        let missing: BTreeMap<_, _> = registry
            .iter()
            .filter(|(id, z)| {
                let dir = self.backing.join(&z.path);
                match self.marker_at(&dir) {
                    Some(Ok(m)) => &m.id_hex() != *id,
                    // present but not authentic: the zone stays a zone, its files give EIO
                    Some(Err(e)) => {
                        log::error!("zone /{} (key {}): {e}; its files will give EIO", z.path, z.key);
                        false
                    }
                    None => true,
                }
            })
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let found: BTreeMap<String, PathBuf> = {
            let mut f = BTreeMap::new();
            walk(&self.backing, &mut |p, m| {
                if m.is_dir() {
                    if let Some(Ok(marker)) = self.marker_at(p) {
                        f.insert(marker.id_hex(), p.to_path_buf());
                    }
                }
            });
            f
        };
        for (id, z) in missing {
            if let Some(p) = found.get(id) {
                let rel = self.relative(p);
                log::info!("zone {id} (key {}) moved from /{} to /{rel}", z.key, z.path);
                self.keys
                    .store()
                    .write()
                    .register_zone(id, &z.key, &rel)
                    .map_err(|e| e.to_string())?;
            } else if self.backing.join(&z.path).is_dir() {
                return Err(format!(
                    "zone /{} (key {}, id {id}) has lost its marker {MARKER_FILE}; refusing to mount so that new \
                     files there are not stored in plaintext. Restore the marker from a backup, or remove the \
                     directory if the zone is no longer wanted",
                    z.path, z.key
                ));
            } else {
                log::warn!(
                    "zone /{} (key {}, id {id}) no longer exists; forgetting it",
                    z.path,
                    z.key
                );
                self.keys
                    .store()
                    .write()
                    .unregister_zone(id)
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }
}
