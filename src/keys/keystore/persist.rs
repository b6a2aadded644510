//! The keystore on disk: where it lives, reading and parsing it, and replacing it
//! atomically under the lock that serializes the mount daemon's and the command line's
//! updates.

use super::model::{StoreFile, KEYSTORE_FORMAT};
use super::sealing::{body_mac, KDF_ALGORITHM};
use super::{Body, Keystore};
use crate::keys::atomic::{read_file, write_file, FileLock};
use crate::keys::KeyError;
use std::path::{Path, PathBuf};

/// Name of the keystore file inside `.ezfs`.
pub const KEYSTORE_FILE: &str = "keystore.json";
/// Name of the lock file inside `.ezfs` that every keystore update holds.
pub const LOCK_FILE: &str = "lock";
/// Largest keystore file read (thousands of keys and zones fit in far less).
pub const MAX_KEYSTORE: u64 = 64 << 20;

/// The `.ezfs` directory of a backing dir.
pub fn ezfs_dir(backing: &Path) -> PathBuf {
    backing.join(crate::EZFS_DIR)
}

/// Reads and parses the keystore of the `.ezfs` directory `dir`; a missing file says
/// whether the backing dir was never initialized or lost its keystore.
pub(super) fn read_store(dir: &Path) -> Result<StoreFile, KeyError> {
    let path = dir.join(KEYSTORE_FILE);
    let data = match read_file(&path, MAX_KEYSTORE) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let backing = dir.parent().unwrap_or(dir).to_path_buf();
            return Err(if dir.is_dir() {
                KeyError::KeystoreMissing(backing)
            } else {
                KeyError::NotInitialized(backing)
            });
        }
        Err(e) => return Err(KeyError::io(format!("cannot read {}", path.display()))(e)),
    };
    parse_store(&path, &data)
}

/// Reads and parses a copy of a keystore (a backup) at `file`.
pub(super) fn read_copy(file: &Path) -> Result<StoreFile, KeyError> {
    let data =
        read_file(file, MAX_KEYSTORE).map_err(KeyError::io(format!("cannot read {}", file.display())))?;
    parse_store(file, &data)
}

/// Parses keystore file bytes (read from `path`, named in errors).
fn parse_store(path: &Path, data: &[u8]) -> Result<StoreFile, KeyError> {
    let corrupt = |why: String| KeyError::Corrupt {
        path: path.to_path_buf(),
        why,
    };
    let store: StoreFile = serde_json::from_slice(data).map_err(|e| corrupt(e.to_string()))?;
    if store.format != KEYSTORE_FORMAT {
        return Err(KeyError::UnsupportedFormat(store.format));
    }
    if store.kdf.algorithm != KDF_ALGORITHM {
        return Err(corrupt(format!("unknown KDF '{}'", store.kdf.algorithm)));
    }
    Ok(store)
}

/// Reads the keystore's public part (key names, versions, zones) without unlocking it.
pub fn read_body(backing: &Path) -> Result<Body, KeyError> {
    Ok(read_store(&ezfs_dir(backing))?.body)
}

impl Keystore {
    /// Writes the keystore as it is in memory, the body's MAC made afresh.
    pub(super) fn save(&self) -> Result<(), KeyError> {
        let store = StoreFile {
            format: KEYSTORE_FORMAT,
            kdf: self.kdf.clone(),
            master: self.sealed_master.clone(),
            previous_master: self.previous.as_ref().map(|(sealed, _)| sealed.clone()),
            recovery: self.recovery.clone(),
            body: self.body.clone(),
            mac: body_mac(&self.master, &self.body),
        };
        let data = serde_json::to_vec_pretty(&store).expect("keystore serializes");
        let path = self.dir.join(KEYSTORE_FILE);
        write_file(&path, &data, 0o600).map_err(KeyError::io(format!("cannot write {}", path.display())))
    }

    /// Takes the keystore's lock, held until the guard drops.
    pub(super) fn lock(&self) -> Result<FileLock, KeyError> {
        let lock_path = self.dir.join(LOCK_FILE);
        FileLock::acquire(&lock_path).map_err(KeyError::io(format!("cannot lock {}", lock_path.display())))
    }

    /// Applies `change` to the freshest copy of the keystore under the lock, then saves.
    pub(super) fn update<T>(
        &mut self,
        change: impl FnOnce(&mut Keystore) -> Result<T, KeyError>,
    ) -> Result<T, KeyError> {
        let _lock = self.lock()?;
        self.reload()?;
        let out = change(self)?;
        self.save()?;
        // unseal what the change added (new key versions) the same way a reader would
        self.reload()?;
        Ok(out)
    }
}
