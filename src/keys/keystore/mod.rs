//! The local keystore: `BACKING/.ezfs/keystore.json`, mode 0600.
//!
//! ```text
//! passphrase --Argon2id(salt, m, t, p)--> KEK --AES-GCM--> master key (random, 256 bit)
//! master key --AES-GCM--> every zone-key version's material
//! master key --GMAC-----> the body (key list, zone registry): tampering is detected
//! ```
//! The passphrase only seals the master key, so changing it rewrites one field and
//! no data. Each sealed value binds its context in the associated data (the KDF
//! parameters for the master key, name and version for key material), so values
//! cannot be swapped between fields. The file is replaced atomically under a lock,
//! so the mount daemon and the command line can both update it.
//!
//! This module holds the unlocked [`Keystore`] and how it is made (init, unlock,
//! reload); its parts each have one job: `model` (the file's fields), `sealing` (what
//! is sealed and how), `persist` (reading, writing, locking), and the operations by
//! what they change: `zone_keys` (keys and their versions), `acl` (who may use a key),
//! `registry` (which directories are zones), `master_key` (rotation, passphrase,
//! recovery key).

mod acl;
mod master_key;
mod model;
mod persist;
mod registry;
mod sealing;
mod zone_keys;

pub use model::{
    Acl, Body, KdfParams, KeyEntry, NameKeys, Principal, VersionEntry, WrappedSecret, ZoneEntry,
    KEYSTORE_FORMAT,
};
pub use persist::{ezfs_dir, read_body, KEYSTORE_FILE, LOCK_FILE, MAX_KEYSTORE};

use super::KeyError;
use crate::crypto::{Cipher, Key};
use model::{Kdf, StoreFile};
use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// An unlocked keystore: the master key and every key version's material in memory
/// (zeroized on drop).
pub struct Keystore {
    dir: PathBuf,
    kdf: Kdf,
    sealed_master: String,
    master_key: Key,
    master: Cipher,
    /// During a master-key rotation: the previous master, sealed and as a cipher.
    previous: Option<(String, Cipher)>,
    /// The file says a rotation is under way (`previous` may be unknown: unlocked with
    /// the recovery key).
    rotation_pending: bool,
    recovery: Option<super::recovery::Slot>,
    body: Body,
    material: HashMap<(String, u32), Key>,
}

impl std::fmt::Debug for Keystore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keystore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// How a keystore is unlocked.
enum Credential<'a> {
    Passphrase(&'a [u8]),
    Recovery(&'a Key),
}

impl Keystore {
    /// Creates `BACKING/.ezfs` with an empty keystore sealed by `passphrase`.
    /// Refuses when `.ezfs` exists or the backing dir is not empty.
    pub fn init(backing: &Path, passphrase: &[u8], params: KdfParams) -> Result<Keystore, KeyError> {
        let meta = std::fs::metadata(backing).map_err(KeyError::io(format!(
            "cannot use {} as backing directory",
            backing.display()
        )))?;
        if !meta.is_dir() {
            return Err(KeyError::Other(format!(
                "{} is not a directory",
                backing.display()
            )));
        }
        let dir = ezfs_dir(backing);
        if dir.join(KEYSTORE_FILE).exists() {
            return Err(KeyError::Other(format!(
                "{} is already initialized (.ezfs exists)",
                backing.display()
            )));
        }
        if dir.exists() {
            return Err(KeyError::KeystoreMissing(backing.to_path_buf()));
        }
        let mut entries =
            std::fs::read_dir(backing).map_err(KeyError::io(format!("cannot list {}", backing.display())))?;
        if entries.next().is_some() {
            return Err(KeyError::Other(format!(
                "{} is not empty; ezfs init wants an empty directory",
                backing.display()
            )));
        }
        // only root (or the owner) may enter the backing dir: users reach their files
        // through the mount, which the daemon serves with root's rights
        std::fs::set_permissions(backing, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(KeyError::io(format!("cannot make {} private", backing.display())))?;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(KeyError::io(format!("cannot create {}", dir.display())))?;
        let kdf = Kdf::fresh(params);
        let master = Key::random();
        let sealed_master = sealing::seal_master(&sealing::derive_kek(passphrase, &kdf)?, &kdf, &master);
        let ks = Keystore {
            dir,
            kdf,
            sealed_master,
            master: master.cipher(),
            master_key: master,
            previous: None,
            rotation_pending: false,
            recovery: None,
            body: Body::default(),
            material: HashMap::new(),
        };
        if let Err(e) = ks.save() {
            let _ = std::fs::remove_dir_all(&ks.dir);
            return Err(e);
        }
        Ok(ks)
    }

    /// Unlocks the keystore of `backing` with `passphrase`.
    pub fn unlock(backing: &Path, passphrase: &[u8]) -> Result<Keystore, KeyError> {
        let dir = ezfs_dir(backing);
        let store = persist::read_store(&dir)?;
        Self::open(dir, store, Credential::Passphrase(passphrase))
    }

    /// Unlocks the keystore of `backing` with its recovery key (the passphrase was
    /// lost): then set a new one with [`Keystore::change_passphrase`].
    pub fn unlock_with_recovery(backing: &Path, recovery: &Key) -> Result<Keystore, KeyError> {
        let dir = ezfs_dir(backing);
        let store = persist::read_store(&dir)?;
        Self::open(dir, store, Credential::Recovery(recovery))
    }

    /// Checks a copy of a keystore (a backup) with `passphrase`: the master key
    /// unseals, the body authenticates, every key version unseals. Returns its body.
    pub fn verify_copy(file: &Path, passphrase: &[u8]) -> Result<Body, KeyError> {
        let store = persist::read_copy(file)?;
        let dir = file.parent().unwrap_or(Path::new(".")).to_path_buf();
        Ok(Self::open(dir, store, Credential::Passphrase(passphrase))?.body)
    }

    /// Unseals the master key (and during a rotation the one before) with
    /// `credential`, then loads the rest of `store`.
    fn open(dir: PathBuf, store: StoreFile, credential: Credential<'_>) -> Result<Keystore, KeyError> {
        let path = dir.join(KEYSTORE_FILE);
        let corrupt = |why: &str| KeyError::Corrupt {
            path: path.clone(),
            why: why.into(),
        };
        let wrapped =
            sealing::decode_wrapped(&store.master).ok_or_else(|| corrupt("bad master key field"))?;
        let (master, previous) = match credential {
            Credential::Passphrase(passphrase) => {
                let kek = sealing::derive_kek(passphrase, &store.kdf)?;
                let master =
                    sealing::unseal_master(&kek, &store.kdf, &wrapped).ok_or(KeyError::WrongPassphrase)?;
                let previous = match &store.previous_master {
                    Some(sealed) => {
                        let key = sealing::decode_wrapped(sealed)
                            .and_then(|w| sealing::unseal_previous(&kek, &store.kdf, &w))
                            .ok_or_else(|| corrupt("the previous master key does not authenticate"))?;
                        Some((sealed.clone(), key.cipher()))
                    }
                    None => None,
                };
                (master, previous)
            }
            Credential::Recovery(rk) => {
                let slot = store.recovery.as_ref().ok_or_else(|| {
                    KeyError::Other("this keystore has no recovery key (made with --no-recovery-key?)".into())
                })?;
                let master = super::recovery::master_from(slot, rk)
                    .ok_or_else(|| KeyError::Other("wrong recovery key".into()))?;
                (master, None)
            }
        };
        let mut ks = Keystore {
            dir,
            kdf: store.kdf.clone(),
            sealed_master: store.master.clone(),
            master: master.cipher(),
            master_key: master,
            previous,
            rotation_pending: store.previous_master.is_some(),
            recovery: store.recovery.clone(),
            body: Body::default(),
            material: HashMap::new(),
        };
        ks.load(store)?;
        Ok(ks)
    }

    /// Verifies the body's MAC and unseals every key version.
    fn load(&mut self, store: StoreFile) -> Result<(), KeyError> {
        let path = self.dir.join(KEYSTORE_FILE);
        let corrupt = |why: &str| KeyError::Corrupt {
            path: path.clone(),
            why: why.into(),
        };
        sealing::check_body_mac(&self.master, &store.body, &store.mac).map_err(corrupt)?;
        let material = sealing::unseal_materials(&self.master, &store.body).map_err(|why| corrupt(&why))?;
        if store.previous_master.is_none() {
            self.previous = None;
        }
        self.rotation_pending = store.previous_master.is_some();
        self.recovery = store.recovery;
        self.kdf = store.kdf;
        self.sealed_master = store.master;
        self.body = store.body;
        self.material = material;
        Ok(())
    }

    /// Re-reads the file (another process may have changed it); the master key stays.
    pub fn reload(&mut self) -> Result<(), KeyError> {
        let store = persist::read_store(&self.dir)?;
        // a changed passphrase re-seals the same master key: load() checks the MAC with it
        self.load(store)
    }

    /// The public part.
    pub fn body(&self) -> &Body {
        &self.body
    }

    /// The backing dir's `.ezfs` directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// A keystore made cheaply (the tests of every part start from one).
#[cfg(test)]
mod fixture {
    use super::{KdfParams, Keystore};

    pub const CHEAP: KdfParams = KdfParams {
        m_kib: 64,
        t: 1,
        p: 1,
    };

    pub fn fresh() -> (tempfile::TempDir, Keystore) {
        let d = tempfile::tempdir().unwrap();
        let ks = Keystore::init(d.path(), b"pw", CHEAP).unwrap();
        (d, ks)
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::{fresh, CHEAP};
    use super::*;

    #[test]
    fn init_unlock_and_wrong_passphrase() {
        let (d, mut ks) = fresh();
        ks.create_key("k1", 0).unwrap();
        let before = std::fs::read(d.path().join(".ezfs/keystore.json")).unwrap();
        assert!(matches!(
            Keystore::unlock(d.path(), b"nope"),
            Err(KeyError::WrongPassphrase)
        ));
        assert_eq!(
            std::fs::read(d.path().join(".ezfs/keystore.json")).unwrap(),
            before,
            "nothing changed"
        );
        let ks2 = Keystore::unlock(d.path(), b"pw").unwrap();
        assert_eq!(ks2.material("k1", 1).unwrap(), ks.material("k1", 1).unwrap());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.path().join(".ezfs/keystore.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn init_refuses_non_empty_or_existing() {
        let (d, _) = fresh();
        assert!(Keystore::init(d.path(), b"pw", CHEAP)
            .unwrap_err()
            .to_string()
            .contains("already initialized"));
        let d2 = tempfile::tempdir().unwrap();
        std::fs::write(d2.path().join("f"), b"x").unwrap();
        assert!(Keystore::init(d2.path(), b"pw", CHEAP)
            .unwrap_err()
            .to_string()
            .contains("not empty"));
        let d3 = tempfile::tempdir().unwrap();
        assert!(matches!(
            Keystore::unlock(d3.path(), b"pw"),
            Err(KeyError::NotInitialized(_))
        ));
    }

    #[test]
    fn provider_sees_keys_created_elsewhere() {
        let (d, ks) = fresh();
        let provider = crate::keys::LocalProvider::new(ks);
        let mut other = Keystore::unlock(d.path(), b"pw").unwrap();
        other.create_key("late", 0).unwrap();
        use crate::keys::KeyProvider;
        assert_eq!(provider.current_version("late").unwrap(), 1);
        let dek = Key::random();
        let w = provider.wrap("late", 1, b"aad", &dek).unwrap();
        assert_eq!(provider.unwrap("late", 1, b"aad", &w).unwrap(), dek);
        assert!(matches!(
            provider.unwrap("late", 1, b"other", &w),
            Err(KeyError::Unwrap(..))
        ));
    }
}
