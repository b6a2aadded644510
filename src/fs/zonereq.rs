//! The zone requests of the control socket: create a zone, show a path's encryption
//! details, list a zone's files, list the zones (HDFS's `createEncryptionZone`,
//! `getEncryptionZoneForPath`, `listEncryptionZones`).
//!
//! Paths in requests are relative to the mount root and are resolved as the caller
//! (see [`Core::resolve_as`]): beneath the backing root, through no symlink, with the
//! caller's permissions; what a request counts or lists is what the caller can reach.

use super::core::Core;
use super::dirfiles;
use super::error::{FsError, FsResult};
use super::names::shown;
use super::zones::dev_ino;
use crate::backdir::{resolve, sys, Caller};
use crate::format::header::{read_header, SUITE_NAME};
use crate::keys::keystore::NameKeys;
use crate::keys::service::registry;
use crate::text::hex;
use crate::zone::usage::scan_zone;
use crate::zone::walk::has_marker;
use crate::zone::{self, Zone, ZoneMarker, MARKER_FILE};
use serde::Serialize;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One zone, as `zone list` shows it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ZoneSummary {
    /// Path of the zone root relative to the mount root.
    pub path: String,
    /// The zone's id, in hex.
    pub zone_id: String,
    /// The name of the zone's key.
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
    /// Whether file names and symlink targets are encrypted too.
    #[serde(default)]
    pub encrypt_names: bool,
}

/// What `zone info` shows for a path (HDFS's getFileEncryptionInfo).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct PathInfo {
    /// The path asked about, relative to the mount root.
    pub path: String,
    /// Zone root relative to the mount root.
    pub zone: String,
    /// The zone's id, in hex.
    pub zone_id: String,
    /// The name of the zone's key.
    pub key: String,
    /// The key version this file's EDEK is wrapped with (for a directory: the newest).
    pub key_version: u32,
    /// The file format's cipher suite, in words ("AES-256-GCM/4KiB").
    pub cipher_suite: String,
    /// Hex; absent for directories and for empty files that have no header yet.
    pub edek: Option<String>,
    /// The file's id from its header, in hex; absent when `edek` is.
    pub file_id: Option<String>,
    /// For a zone root: how many of the zone's files use each "key@version".
    #[serde(default)]
    pub files_by_version: BTreeMap<String, u64>,
    /// Whether the zone encrypts file names and symlink targets too.
    #[serde(default)]
    pub encrypt_names: bool,
}

/// One file of a zone and the key version its EDEK is wrapped with (`zone files`).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct FileUse {
    /// Path from the mount root.
    pub path: String,
    /// The name of the key the file's EDEK is wrapped with.
    pub key: String,
    /// 0 for an empty file without a header (it gets the newest version when written).
    pub key_version: u32,
}

impl Core {
    /// The zone root at or above `rel` (resolved as `caller`): its path and zone.
    fn zone_root_of(&self, caller: &Caller, rel: &Path) -> FsResult<Option<(PathBuf, Arc<Zone>)>> {
        for dir in rel.ancestors() {
            let (fd, _) = self.resolve_as(caller, &dir.to_string_lossy())?;
            let key = dev_ino(fd.as_fd())?;
            if let Some(z) = self.dir_zone(fd.as_fd(), key) {
                return Ok(Some((dir.to_path_buf(), z)));
            }
        }
        Ok(None)
    }

    /// Makes the empty directory `rel` a zone under key `key`, its file names encrypted
    /// too with `encrypt_names`. `caller` must be root or own the directory, and may
    /// use the key.
    pub fn zone_create(
        &self,
        rel: &str,
        key: &str,
        encrypt_names: bool,
        caller: &Caller,
    ) -> FsResult<ZoneSummary> {
        let made = self.zone_create_inner(rel, key, encrypt_names, caller)?;
        // the zone's first files should not wait for the KMS
        self.warm_kms_pool(key);
        Ok(made)
    }

    /// Starts filling the EDEK pool of `key`'s current version, if a KMS holds it.
    pub fn warm_kms_pool(&self, key: &str) {
        if let (Ok(Some(kms)), Ok(v)) = (self.keys.kms(key), self.keys.current_version(key)) {
            kms.warm(key, v);
        }
    }

    fn zone_create_inner(
        &self,
        rel: &str,
        key: &str,
        encrypt_names: bool,
        caller: &Caller,
    ) -> FsResult<ZoneSummary> {
        if self.read_only {
            return Err(FsError::ReadOnly);
        }
        let (dir, rel) = self.resolve_as(caller, rel)?;
        let at = shown(&rel);
        let st = sys::stat_at(dir.as_fd(), OsStr::new("")).map_err(FsError::at(&at))?;
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            return Err(FsError::NotADirectory(at));
        }
        if !caller.is_root() && st.st_uid != caller.uid {
            return Err(FsError::NotOwner {
                path: at,
                what: "make it a zone",
            });
        }
        self.check_key_use(caller, key)?;
        let version = self.keys.current_version(key)?;
        let key_ino = (st.st_dev, st.st_ino);
        if self.zone_roots.0.read().contains_key(&key_ino) || has_marker(dir.as_fd()) {
            return Err(FsError::AlreadyZone(at));
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
        // creates wait while the directory becomes a zone: none can slip in as plaintext
        let _gate = self.zone_gate.write();
        if !is_empty() {
            return Err(FsError::NotEmpty(at));
        }
        let marker = ZoneMarker::new(key);
        let id = marker.id_hex();
        let mut zone = Zone::new(marker.zone_id, key);
        let names = match encrypt_names {
            true => Some(NameKeys {
                current: crate::zone::names::new_secret(&*self.keys, &marker.zone_id, key, version)?,
                next: None,
            }),
            false => None,
        };
        let backing_rel = self.backing_rel(&rel)?;
        // registered first: from here on the directory is a zone whatever its marker says
        self.keys
            .register_zone(&id, key, &backing_rel.to_string_lossy())?;
        self.zone_roots.0.write().insert(key_ino, id.clone());
        let undo = || {
            self.zone_roots.0.write().remove(&key_ino);
            let _ = self.keys.unregister_zone(&id);
        };
        if let Some(names) = names {
            // the root's diriv (one a parent zone's mkdir gave it stays)
            let diriv = match dirfiles::read_diriv(dir.as_fd()) {
                Ok(_) => Ok(()),
                Err(_) => dirfiles::write_diriv(dir.as_fd()),
            };
            if let Err(source) = diriv {
                undo();
                return Err(FsError::CannotWriteMarker { at, source });
            }
            if let Err(e) = self.keys.set_zone_names(&id, Some(names.clone())) {
                undo();
                return Err(e.into());
            }
            zone.names = Some(names);
        }
        let mut bytes = Vec::new();
        self.keys
            .with_marker_keys(&mut |keys| bytes = marker.encode(keys[0]));
        if let Err(source) = resolve::replace_at(dir.as_fd(), OsStr::new(MARKER_FILE), &bytes, 0o644) {
            undo();
            return Err(FsError::CannotWriteMarker { at, source });
        }
        self.set_cached_zone(key_ino, Arc::new(zone));
        Ok(ZoneSummary {
            path: at,
            zone_id: id,
            key: key.into(),
            key_version: version,
            files: 0,
            files_by_version: BTreeMap::new(),
            broken: None,
            encrypt_names,
        })
    }

    /// Refuses unless `caller` may use key `key` (root and the key's owner always may).
    fn check_key_use(&self, caller: &Caller, key: &str) -> FsResult<()> {
        if self
            .keys
            .may_use(key, caller.uid, caller.gid, &|| caller.groups())?
        {
            Ok(())
        } else {
            Err(FsError::KeyDenied {
                uid: caller.uid,
                key: key.into(),
            })
        }
    }

    /// Encryption details of a file or directory in a zone.
    pub fn zone_info(&self, rel: &str, caller: &Caller) -> FsResult<PathInfo> {
        let (fd, rel) = self.resolve_as(caller, rel)?;
        let at = shown(&rel);
        let st = sys::stat_at(fd.as_fd(), OsStr::new("")).map_err(FsError::at(&at))?;
        let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        let start = if is_dir {
            rel.as_path()
        } else {
            rel.parent().unwrap_or(Path::new(""))
        };
        let (root, zone) = self
            .zone_root_of(caller, start)?
            .ok_or_else(|| FsError::NotInZone(at.clone()))?;
        if let Some(why) = &zone.broken {
            return Err(FsError::BrokenZone {
                at: format!("zone {}", shown(&root)),
                why: why.clone(),
            });
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
            encrypt_names: zone.names.is_some(),
        };
        if is_dir && root == rel {
            let u = caller.run_as(|| scan_zone(fd.as_fd(), &rel))?;
            info.files_by_version = u.zones.into_values().next().unwrap_or_default();
        }
        if st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_size > 0 {
            let f = sys::reopen(fd.as_fd(), libc::O_RDONLY | libc::O_NONBLOCK).map_err(FsError::at(&at))?;
            let h = read_header(&f).map_err(|why| FsError::BadHeader { at: at.clone(), why })?;
            info.key = h.key_name.clone();
            info.key_version = h.key_version;
            info.edek = Some(hex(&h.edek));
            info.file_id = Some(hex(&h.file_id));
        }
        Ok(info)
    }

    /// The files of the zone rooted at `rel` (nested zones excluded) that `caller` can
    /// reach, with the key version each uses; with `version`, only those on it.
    pub fn zone_file_list(&self, rel: &str, version: Option<u32>, caller: &Caller) -> FsResult<Vec<FileUse>> {
        let (fd, rel) = self.resolve_as(caller, rel)?;
        let backing = self.backing_rel(&rel)?;
        let key = dev_ino(fd.as_fd())?;
        match self.dir_zone(fd.as_fd(), key).filter(|_| self.is_zone_root(key)) {
            Some(z) => {
                if let Some(why) = &z.broken {
                    return Err(FsError::BrokenZone {
                        at: shown(&rel),
                        why: why.clone(),
                    });
                }
            }
            None => return Err(FsError::NotZoneRoot(shown(&rel))),
        }
        let list = caller.run_as(|| {
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
                            path: shown(&self.mount_rel(&backing.join(f.rel))),
                            key,
                            key_version: v,
                        });
                    }
                },
            );
            out
        })?;
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
        let mut out: Vec<ZoneSummary> = Vec::new();
        for (id, e) in registry(&*self.keys) {
            let Ok((fd, rel)) = self.resolve_backing_as(caller, &e.path) else {
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
                encrypt_names: e.names.is_some(),
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
}
