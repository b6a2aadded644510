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

use super::atomic::{write_file, FileLock};
use super::{validate_key_name, KeyError};
use crate::crypto::{random_bytes, Cipher, Key, KEY_LEN, NONCE_LEN, TAG_LEN, WRAPPED_KEY_LEN};
use crate::text::{hex, unhex, unhex_vec, unix_now};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Keystore file format this build writes and reads.
pub const KEYSTORE_FORMAT: u32 = 1;
/// Name of the keystore file inside `.ezfs`.
pub const KEYSTORE_FILE: &str = "keystore.json";
const LOCK_FILE: &str = "lock";
/// Largest keystore file read (thousands of keys and zones fit in far less).
const MAX_KEYSTORE: u64 = 64 << 20;

/// Argon2id cost parameters, stored with the salt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes, 1 lane: about 0.2 s on a current core.
    fn default() -> Self {
        KdfParams {
            m_kib: 64 * 1024,
            t: 3,
            p: 1,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Kdf {
    algorithm: String,
    #[serde(flatten)]
    params: KdfParams,
    salt: String,
}

/// One version of a zone key, as stored: its material sealed by the master key
/// (empty for keys an external provider holds).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VersionEntry {
    pub version: u32,
    pub created: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    sealed: String,
}

/// Who may use a key's zones besides its owner and root (HDFS's KMS ACLs).
/// New fields are left out of the JSON when empty, so keystores written before they
/// existed keep authenticating.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Acl {
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub users: BTreeSet<u32>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub groups: BTreeSet<u32>,
}

impl Acl {
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.groups.is_empty()
    }
}

/// A user or a group in a key's access list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    User(u32),
    Group(u32),
}

/// A zone key: its versions (newest last), who created it and who may use it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyEntry {
    pub owner: u32,
    pub created: u64,
    pub versions: Vec<VersionEntry>,
    #[serde(default, skip_serializing_if = "Acl::is_empty")]
    pub acl: Acl,
    /// The material lives in the external key provider, not here.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub external: bool,
}

impl KeyEntry {
    /// The newest version (new files use it).
    pub fn current(&self) -> u32 {
        self.versions.last().map_or(0, |v| v.version)
    }

    /// Whether a process with `uid`, primary group `gid` and supplementary groups
    /// `groups()` (only asked for when needed: it costs a /proc read) may use the key.
    pub fn allows(&self, uid: u32, gid: u32, groups: impl FnOnce() -> Vec<u32>) -> bool {
        uid == 0
            || uid == self.owner
            || self.acl.users.contains(&uid)
            || self.acl.groups.contains(&gid)
            || (!self.acl.groups.is_empty() && groups().iter().any(|g| self.acl.groups.contains(g)))
    }
}

/// A zone known to the keystore (so keys used by zones cannot be deleted, and a
/// removed zone marker is noticed).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ZoneEntry {
    pub key: String,
    /// Path of the zone root relative to the backing dir, as last seen.
    pub path: String,
}

/// What the keystore says, readable without the passphrase (nothing in it is secret:
/// key material is sealed).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Body {
    pub keys: BTreeMap<String, KeyEntry>,
    /// Zone id (hex) to zone.
    pub zones: BTreeMap<String, ZoneEntry>,
    /// The external key provider's command line (`exec:PROGRAM ARGS…`) that holds the
    /// material of keys marked `external`; absent for a purely local keystore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
}

impl Body {
    /// Zone roots that use key `name`, as paths from the mount root ("/dir").
    pub fn zones_using(&self, name: &str) -> Vec<String> {
        self.zones
            .values()
            .filter(|z| z.key == name)
            .map(|z| format!("/{}", z.path))
            .collect()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoreFile {
    format: u32,
    kdf: Kdf,
    master: String,
    /// While `passwd --rotate-master` runs: the master key before, sealed like
    /// `master`, still accepted on zone markers until every marker is rewritten.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous_master: Option<String>,
    /// The recovery key's way to the master key (see `recovery`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    recovery: Option<super::recovery::Slot>,
    body: Body,
    mac: String,
}

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

fn master_aad(kdf: &Kdf) -> Vec<u8> {
    let mut a = b"ezfs-master\0".to_vec();
    a.extend_from_slice(&KEYSTORE_FORMAT.to_le_bytes());
    for v in [kdf.params.m_kib, kdf.params.t, kdf.params.p] {
        a.extend_from_slice(&v.to_le_bytes());
    }
    a.extend_from_slice(kdf.salt.as_bytes());
    a
}

/// Associated data of the previous master key while a rotation runs.
fn previous_aad(kdf: &Kdf) -> Vec<u8> {
    let mut a = b"ezfs-previous-master\0".to_vec();
    a.extend_from_slice(&master_aad(kdf));
    a
}

fn material_aad(name: &str, version: u32) -> Vec<u8> {
    let mut a = b"ezfs-key\0".to_vec();
    a.extend_from_slice(name.as_bytes());
    a.push(0);
    a.extend_from_slice(&version.to_le_bytes());
    a
}

fn body_aad(body: &Body) -> Vec<u8> {
    let mut a = b"ezfs-body\0".to_vec();
    a.extend_from_slice(&serde_json::to_vec(body).expect("body serializes"));
    a
}

fn derive_kek(passphrase: &[u8], kdf: &Kdf) -> Result<Key, KeyError> {
    let salt = unhex_vec(&kdf.salt).ok_or_else(|| KeyError::Other("keystore salt is not hex".into()))?;
    let params = argon2::Params::new(kdf.params.m_kib, kdf.params.t, kdf.params.p, Some(KEY_LEN))
        .map_err(|e| KeyError::Other(format!("invalid Argon2id parameters: {e}")))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    argon
        .hash_password_into(passphrase, &salt, &mut *out)
        .map_err(|e| KeyError::Other(format!("Argon2id failed: {e}")))?;
    Ok(Key::from_slice(&out[..]).expect("32 bytes"))
}

fn to_wrapped(s: &str) -> Option<[u8; WRAPPED_KEY_LEN]> {
    unhex(s)
}

/// The `.ezfs` directory of a backing dir.
pub fn ezfs_dir(backing: &Path) -> PathBuf {
    backing.join(crate::EZFS_DIR)
}

/// How a keystore is unlocked.
enum Credential<'a> {
    Passphrase(&'a [u8]),
    Recovery(&'a Key),
}

fn read_store(dir: &Path) -> Result<StoreFile, KeyError> {
    let path = dir.join(KEYSTORE_FILE);
    let data = match super::atomic::read_file(&path, MAX_KEYSTORE) {
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
    if store.kdf.algorithm != "argon2id" {
        return Err(corrupt(format!("unknown KDF '{}'", store.kdf.algorithm)));
    }
    Ok(store)
}

/// Reads the keystore's public part (key names, versions, zones) without unlocking it.
pub fn read_body(backing: &Path) -> Result<Body, KeyError> {
    Ok(read_store(&ezfs_dir(backing))?.body)
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
        let kdf = Kdf {
            algorithm: "argon2id".into(),
            params,
            salt: hex(&random_bytes::<16>()),
        };
        let master = Key::random();
        let sealed_master = hex(&derive_kek(passphrase, &kdf)?
            .cipher()
            .wrap_key(&master_aad(&kdf), &master));
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
        let store = read_store(&dir)?;
        Self::open(dir, store, Credential::Passphrase(passphrase))
    }

    /// Unlocks the keystore of `backing` with its recovery key (the passphrase was
    /// lost): then set a new one with [`Keystore::change_passphrase`].
    pub fn unlock_with_recovery(backing: &Path, recovery: &Key) -> Result<Keystore, KeyError> {
        let dir = ezfs_dir(backing);
        let store = read_store(&dir)?;
        Self::open(dir, store, Credential::Recovery(recovery))
    }

    /// Checks a copy of a keystore (a backup) with `passphrase`: the master key
    /// unseals, the body authenticates, every key version unseals. Returns its body.
    pub fn verify_copy(file: &Path, passphrase: &[u8]) -> Result<Body, KeyError> {
        let data = super::atomic::read_file(file, MAX_KEYSTORE)
            .map_err(KeyError::io(format!("cannot read {}", file.display())))?;
        let store = parse_store(file, &data)?;
        let dir = file.parent().unwrap_or(Path::new(".")).to_path_buf();
        Ok(Self::open(dir, store, Credential::Passphrase(passphrase))?.body)
    }

    fn open(dir: PathBuf, store: StoreFile, credential: Credential<'_>) -> Result<Keystore, KeyError> {
        let path = dir.join(KEYSTORE_FILE);
        let wrapped = to_wrapped(&store.master).ok_or_else(|| KeyError::Corrupt {
            path: path.clone(),
            why: "bad master key field".into(),
        })?;
        let (master, previous) = match credential {
            Credential::Passphrase(passphrase) => {
                let kek = derive_kek(passphrase, &store.kdf)?.cipher();
                let master = kek
                    .unwrap_key(&master_aad(&store.kdf), &wrapped)
                    .map_err(|_| KeyError::WrongPassphrase)?;
                let previous = match &store.previous_master {
                    Some(sealed) => {
                        let key = to_wrapped(sealed)
                            .and_then(|w| kek.unwrap_key(&previous_aad(&store.kdf), &w).ok())
                            .ok_or_else(|| KeyError::Corrupt {
                                path: path.clone(),
                                why: "the previous master key does not authenticate".into(),
                            })?;
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
        let mac: [u8; NONCE_LEN + TAG_LEN] = unhex(&store.mac).ok_or_else(|| corrupt("bad mac field"))?;
        self.master
            .verify_mac(&body_aad(&store.body), &mac)
            .map_err(|_| corrupt("authentication failed (was it edited?)"))?;
        let mut material = HashMap::new();
        for (name, entry) in store.body.keys.iter().filter(|(_, e)| !e.external) {
            for v in &entry.versions {
                let wrapped = to_wrapped(&v.sealed).ok_or_else(|| corrupt("bad sealed key field"))?;
                let key = self
                    .master
                    .unwrap_key(&material_aad(name, v.version), &wrapped)
                    .map_err(|_| corrupt(&format!("{name}@{} does not authenticate", v.version)))?;
                material.insert((name.clone(), v.version), key);
            }
        }
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
        let store = read_store(&self.dir)?;
        // a changed passphrase re-seals the same master key: load() checks the MAC with it
        self.load(store)
    }

    fn save(&self) -> Result<(), KeyError> {
        let store = StoreFile {
            format: KEYSTORE_FORMAT,
            kdf: self.kdf.clone(),
            master: self.sealed_master.clone(),
            previous_master: self.previous.as_ref().map(|(sealed, _)| sealed.clone()),
            recovery: self.recovery.clone(),
            body: self.body.clone(),
            mac: hex(&self.master.mac(&body_aad(&self.body))),
        };
        let data = serde_json::to_vec_pretty(&store).expect("keystore serializes");
        let path = self.dir.join(KEYSTORE_FILE);
        write_file(&path, &data, 0o600).map_err(KeyError::io(format!("cannot write {}", path.display())))
    }

    /// Applies `change` to the freshest copy of the keystore under the lock, then saves.
    fn update<T>(
        &mut self,
        change: impl FnOnce(&mut Keystore) -> Result<T, KeyError>,
    ) -> Result<T, KeyError> {
        let lock_path = self.dir.join(LOCK_FILE);
        let _lock = FileLock::acquire(&lock_path)
            .map_err(KeyError::io(format!("cannot lock {}", lock_path.display())))?;
        self.reload()?;
        let out = change(self)?;
        self.save()?;
        // unseal what the change added (new key versions) the same way a reader would
        self.reload()?;
        Ok(out)
    }

    /// The public part.
    pub fn body(&self) -> &Body {
        &self.body
    }

    /// The backing dir's `.ezfs` directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The master key itself: only for tests that look for it where it must not be
    /// (a core dump, say).
    #[doc(hidden)]
    pub fn master_key(&self) -> &Key {
        &self.master_key
    }

    /// The cipher that authenticates zone markers (the master key; callers separate
    /// uses by their associated data).
    pub fn master(&self) -> &Cipher {
        &self.master
    }

    /// Newest version of key `name`.
    pub fn current_version(&self, name: &str) -> Result<u32, KeyError> {
        self.body
            .keys
            .get(name)
            .map(KeyEntry::current)
            .ok_or_else(|| KeyError::NoSuchKey(name.into()))
    }

    /// Material of `name@version`.
    pub fn material(&self, name: &str, version: u32) -> Result<&Key, KeyError> {
        if !self.body.keys.contains_key(name) {
            return Err(KeyError::NoSuchKey(name.into()));
        }
        self.material
            .get(&(name.to_owned(), version))
            .ok_or_else(|| KeyError::NoSuchVersion(name.into(), version))
    }

    fn seal_version(&self, name: &str, version: u32) -> VersionEntry {
        let key = Key::random();
        VersionEntry {
            version,
            created: unix_now(),
            sealed: hex(&self.master.wrap_key(&material_aad(name, version), &key)),
        }
    }

    /// Creates key `name` at version 1, owned by `owner` (a uid).
    pub fn create_key(&mut self, name: &str, owner: u32) -> Result<(), KeyError> {
        self.add_key(name, owner, None)
    }

    /// Records key `name`, whose material the external provider holds, at `version`.
    pub fn create_external_key(&mut self, name: &str, owner: u32, version: u32) -> Result<(), KeyError> {
        self.add_key(name, owner, Some(version))
    }

    fn add_key(&mut self, name: &str, owner: u32, external: Option<u32>) -> Result<(), KeyError> {
        validate_key_name(name)?;
        self.update(|ks| {
            if ks.body.keys.contains_key(name) {
                return Err(KeyError::KeyExists(name.into()));
            }
            let v = match external {
                Some(version) => VersionEntry {
                    version,
                    created: unix_now(),
                    sealed: String::new(),
                },
                None => ks.seal_version(name, 1),
            };
            ks.body.keys.insert(
                name.into(),
                KeyEntry {
                    owner,
                    created: unix_now(),
                    versions: vec![v],
                    acl: Acl::default(),
                    external: external.is_some(),
                },
            );
            Ok(())
        })
    }

    /// The entry of key `name`.
    pub fn key(&self, name: &str) -> Result<&KeyEntry, KeyError> {
        self.body
            .keys
            .get(name)
            .ok_or_else(|| KeyError::NoSuchKey(name.into()))
    }

    /// Adds a new version of `name`; returns it. New files use it from now on.
    pub fn roll_key(&mut self, name: &str) -> Result<u32, KeyError> {
        self.update(|ks| {
            let next = ks.current_version(name)? + 1;
            if ks.key(name)?.external {
                return Err(KeyError::Other(format!(
                    "key '{name}' lives in the external key provider; roll it there"
                )));
            }
            let v = ks.seal_version(name, next);
            ks.body.keys.get_mut(name).expect("checked").versions.push(v);
            Ok(next)
        })
    }

    /// Records `version` (made by the external provider) as the newest of `name`.
    pub fn add_external_version(&mut self, name: &str, version: u32) -> Result<(), KeyError> {
        self.update(|ks| {
            let current = ks.current_version(name)?;
            if version <= current {
                return Err(KeyError::Other(format!(
                    "the key provider rolled '{name}' to version {version}, not above {current}"
                )));
            }
            let k = ks.body.keys.get_mut(name).expect("checked");
            k.versions.push(VersionEntry {
                version,
                created: unix_now(),
                sealed: String::new(),
            });
            Ok(())
        })
    }

    /// Drops every version of `name` but the newest for which `in_use` is false;
    /// returns the dropped versions.
    pub fn prune_key(&mut self, name: &str, in_use: &dyn Fn(u32) -> bool) -> Result<Vec<u32>, KeyError> {
        self.update(|ks| {
            let current = ks.current_version(name)?;
            let k = ks.body.keys.get_mut(name).expect("checked");
            let mut dropped = Vec::new();
            k.versions.retain(|v| {
                let keep = v.version == current || in_use(v.version);
                if !keep {
                    dropped.push(v.version);
                }
                keep
            });
            Ok(dropped)
        })
    }

    /// Adds `who` to the users of key `name`; false if it was there already.
    pub fn grant(&mut self, name: &str, who: Principal) -> Result<bool, KeyError> {
        self.change_acl(name, |acl| match who {
            Principal::User(u) => acl.users.insert(u),
            Principal::Group(g) => acl.groups.insert(g),
        })
    }

    /// Removes `who` from the users of key `name`; false if it was not there.
    pub fn revoke(&mut self, name: &str, who: Principal) -> Result<bool, KeyError> {
        self.change_acl(name, |acl| match who {
            Principal::User(u) => acl.users.remove(&u),
            Principal::Group(g) => acl.groups.remove(&g),
        })
    }

    fn change_acl(&mut self, name: &str, change: impl FnOnce(&mut Acl) -> bool) -> Result<bool, KeyError> {
        self.update(|ks| {
            ks.key(name)?;
            Ok(change(&mut ks.body.keys.get_mut(name).expect("checked").acl))
        })
    }

    /// Sets the external key provider (`exec:PROGRAM ARGS…`).
    pub fn set_provider(&mut self, provider: &str) -> Result<(), KeyError> {
        self.update(|ks| {
            ks.body.provider = Some(provider.into());
            Ok(())
        })
    }

    /// Deletes key `name` and all its versions; refused while a zone uses it.
    pub fn delete_key(&mut self, name: &str) -> Result<(), KeyError> {
        self.update(|ks| {
            if !ks.body.keys.contains_key(name) {
                return Err(KeyError::NoSuchKey(name.into()));
            }
            let zones = ks.body.zones_using(name);
            if !zones.is_empty() {
                return Err(KeyError::KeyInUse {
                    name: name.into(),
                    zones,
                });
            }
            ks.body.keys.remove(name);
            Ok(())
        })
    }

    /// Records a new zone (or its new path after a rename).
    pub fn register_zone(&mut self, zone_id: &str, key: &str, path: &str) -> Result<(), KeyError> {
        self.update(|ks| {
            ks.current_version(key)?;
            ks.body.zones.insert(
                zone_id.into(),
                ZoneEntry {
                    key: key.into(),
                    path: path.into(),
                },
            );
            Ok(())
        })
    }

    /// Records new paths of zones (a rename moved them): (id, key, path) each.
    pub fn move_zones(&mut self, moved: &[(String, String, String)]) -> Result<(), KeyError> {
        self.update(|ks| {
            for (id, key, path) in moved {
                ks.body.zones.insert(
                    id.clone(),
                    ZoneEntry {
                        key: key.clone(),
                        path: path.clone(),
                    },
                );
            }
            Ok(())
        })
    }

    /// Forgets a zone (its root was removed).
    pub fn unregister_zone(&mut self, zone_id: &str) -> Result<(), KeyError> {
        self.update(|ks| {
            ks.body.zones.remove(zone_id);
            Ok(())
        })
    }

    /// The keys zone markers may be authenticated with: the master key, and during a
    /// master-key rotation the one before it.
    pub fn marker_keys(&self) -> Vec<&Cipher> {
        std::iter::once(&self.master)
            .chain(self.previous.as_ref().map(|(_, c)| c))
            .collect()
    }

    /// Whether a master-key rotation was started and not finished.
    pub fn rotating(&self) -> bool {
        self.rotation_pending
    }

    /// Whether the keystore has a recovery key.
    pub fn has_recovery(&self) -> bool {
        self.recovery.is_some()
    }

    /// Adds (or replaces) the recovery key; returns it, to be shown once.
    pub fn new_recovery_key(&mut self) -> Result<Key, KeyError> {
        let (slot, rk) = super::recovery::new_slot(&self.master_key);
        self.update(|ks| {
            ks.recovery = Some(slot);
            Ok(())
        })?;
        Ok(rk)
    }

    /// Starts a master-key rotation: a new random master key seals every key version
    /// and the body, and is sealed under `passphrase` (a new salt); the master before
    /// stays, sealed, only to authenticate zone markers until they are rewritten
    /// ([`Keystore::finish_rotation`]). Afterwards an old copy of the keystore opens
    /// nothing made later.
    pub fn rotate_master(&mut self, passphrase: &[u8]) -> Result<(), KeyError> {
        let lock_path = self.dir.join(LOCK_FILE);
        let _lock = FileLock::acquire(&lock_path)
            .map_err(KeyError::io(format!("cannot lock {}", lock_path.display())))?;
        self.reload()?;
        if self.rotation_pending {
            return Err(KeyError::Other(
                "a master-key rotation is already under way".into(),
            ));
        }
        let kdf = Kdf {
            algorithm: "argon2id".into(),
            params: self.kdf.params,
            salt: hex(&random_bytes::<16>()),
        };
        let kek = derive_kek(passphrase, &kdf)?.cipher();
        let new = Key::random();
        let cipher = new.cipher();
        for (name, entry) in self.body.keys.iter_mut().filter(|(_, e)| !e.external) {
            for v in &mut entry.versions {
                let key = self
                    .material
                    .get(&(name.clone(), v.version))
                    .ok_or_else(|| KeyError::NoSuchVersion(name.clone(), v.version))?;
                v.sealed = hex(&cipher.wrap_key(&material_aad(name, v.version), key));
            }
        }
        if let Some(slot) = &self.recovery {
            // the same recovery key opens the new master key
            self.recovery = Some(
                super::recovery::rewrap(slot, &self.master, &new)
                    .ok_or_else(|| KeyError::Other("the recovery slot does not authenticate".into()))?,
            );
        }
        let old = std::mem::replace(&mut self.master_key, new);
        let old_cipher = std::mem::replace(&mut self.master, cipher);
        self.previous = Some((hex(&kek.wrap_key(&previous_aad(&kdf), &old)), old_cipher));
        self.sealed_master = hex(&kek.wrap_key(&master_aad(&kdf), &self.master_key));
        self.kdf = kdf;
        self.save()?;
        self.reload()
    }

    /// Ends a master-key rotation (every marker now carries the new master's MAC).
    pub fn finish_rotation(&mut self) -> Result<(), KeyError> {
        self.update(|ks| {
            ks.previous = None;
            Ok(())
        })
    }

    /// Re-seals the master key under a new passphrase; nothing else changes.
    pub fn change_passphrase(&mut self, new_passphrase: &[u8]) -> Result<(), KeyError> {
        let kdf = Kdf {
            algorithm: "argon2id".into(),
            params: self.kdf.params,
            salt: hex(&random_bytes::<16>()),
        };
        let kek = derive_kek(new_passphrase, &kdf)?.cipher();
        self.update(|ks| {
            // reload() proved the file still authenticates under this master key
            if ks.rotation_pending {
                // the previous master is sealed under the old passphrase's key
                return Err(KeyError::Other(
                    "finish the master-key rotation first ('ezfs passwd --rotate-master')".into(),
                ));
            }
            ks.sealed_master = hex(&kek.wrap_key(&master_aad(&kdf), &ks.master_key));
            ks.kdf = kdf;
            Ok(())
        })
    }
}

use std::os::unix::fs::DirBuilderExt;

#[cfg(test)]
mod tests {
    use super::*;

    const CHEAP: KdfParams = KdfParams {
        m_kib: 64,
        t: 1,
        p: 1,
    };

    fn fresh() -> (tempfile::TempDir, Keystore) {
        let d = tempfile::tempdir().unwrap();
        let ks = Keystore::init(d.path(), b"pw", CHEAP).unwrap();
        (d, ks)
    }

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
    fn roll_delete_and_zones() {
        let (_d, mut ks) = fresh();
        ks.create_key("k1", 0).unwrap();
        assert!(matches!(ks.create_key("k1", 0), Err(KeyError::KeyExists(_))));
        assert!(matches!(ks.create_key("bad name", 0), Err(KeyError::BadName(_))));
        assert_eq!(ks.roll_key("k1").unwrap(), 2);
        assert_eq!(ks.current_version("k1").unwrap(), 2);
        assert_ne!(ks.material("k1", 1).unwrap(), ks.material("k1", 2).unwrap());
        assert!(matches!(ks.roll_key("nokey"), Err(KeyError::NoSuchKey(_))));
        ks.register_zone("z1", "k1", "secret").unwrap();
        let e = ks.delete_key("k1").unwrap_err();
        assert!(e.to_string().contains("secret"), "{e}");
        ks.unregister_zone("z1").unwrap();
        ks.delete_key("k1").unwrap();
        assert!(matches!(ks.material("k1", 1), Err(KeyError::NoSuchKey(_))));
    }

    #[test]
    fn corrupt_keystore_is_a_clear_error() {
        let (d, mut ks) = fresh();
        ks.create_key("k1", 0).unwrap();
        let p = d.path().join(".ezfs/keystore.json");
        let good = std::fs::read(&p).unwrap();
        for cut in [0, 1, good.len() / 2, good.len() - 2] {
            std::fs::write(&p, &good[..cut]).unwrap();
            let e = Keystore::unlock(d.path(), b"pw").unwrap_err();
            assert!(matches!(e, KeyError::Corrupt { .. }), "cut {cut}: {e}");
        }
        // flip one hex digit of every field in turn: never a panic, never success
        let text = String::from_utf8(good.clone()).unwrap();
        for field in ["\"sealed\": \"", "\"mac\": \"", "\"master\": \"", "\"salt\": \""] {
            let at = text.find(field).unwrap() + field.len();
            let mut t = text.clone().into_bytes();
            t[at] = if t[at] == b'0' { b'1' } else { b'0' };
            std::fs::write(&p, &t).unwrap();
            assert!(Keystore::unlock(d.path(), b"pw").is_err(), "{field}");
        }
        // an edited body (e.g. a zone removed) fails the MAC
        let edited = text.replace("\"owner\": 0", "\"owner\": 1");
        std::fs::write(&p, edited).unwrap();
        assert!(matches!(
            Keystore::unlock(d.path(), b"pw"),
            Err(KeyError::Corrupt { .. })
        ));
    }

    #[test]
    fn passphrase_change_keeps_keys() {
        let (d, mut ks) = fresh();
        ks.create_key("k1", 0).unwrap();
        ks.change_passphrase(b"new").unwrap();
        assert!(matches!(
            Keystore::unlock(d.path(), b"pw"),
            Err(KeyError::WrongPassphrase)
        ));
        let ks2 = Keystore::unlock(d.path(), b"new").unwrap();
        assert_eq!(ks2.material("k1", 1).unwrap(), ks.material("k1", 1).unwrap());
        // a process that unlocked before the change still reloads fine
        ks.reload().unwrap();
    }

    #[test]
    fn provider_sees_keys_created_elsewhere() {
        let (d, ks) = fresh();
        let provider = LocalProviderForTest::new(ks);
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

    #[test]
    fn acl_grant_revoke_and_allows() {
        let (d, mut ks) = fresh();
        ks.create_key("k1", 1000).unwrap();
        assert!(ks.grant("k1", Principal::User(2000)).unwrap());
        assert!(!ks.grant("k1", Principal::User(2000)).unwrap(), "already granted");
        assert!(ks.grant("k1", Principal::Group(50)).unwrap());
        assert!(matches!(
            ks.grant("nokey", Principal::User(1)),
            Err(KeyError::NoSuchKey(_))
        ));
        let ks2 = Keystore::unlock(d.path(), b"pw").unwrap();
        let k = ks2.key("k1").unwrap();
        let none = Vec::new;
        assert!(k.allows(0, 0, none), "root");
        assert!(k.allows(1000, 1000, none), "owner");
        assert!(k.allows(2000, 2000, none), "granted user");
        assert!(k.allows(3000, 50, none), "granted primary group");
        assert!(
            k.allows(3000, 3000, || vec![7, 50]),
            "granted supplementary group"
        );
        assert!(!k.allows(3000, 3000, || vec![7]), "nobody else");
        assert!(ks.revoke("k1", Principal::User(2000)).unwrap());
        assert!(!ks.revoke("k1", Principal::User(2000)).unwrap());
        assert!(!ks.key("k1").unwrap().allows(2000, 2000, none));
    }

    #[test]
    fn prune_keeps_the_newest_and_versions_in_use() {
        let (_d, mut ks) = fresh();
        ks.create_key("k1", 0).unwrap();
        for _ in 0..3 {
            ks.roll_key("k1").unwrap();
        }
        let dropped = ks.prune_key("k1", &|v| v == 2).unwrap();
        assert_eq!(dropped, vec![1, 3]);
        let left: Vec<u32> = ks.key("k1").unwrap().versions.iter().map(|v| v.version).collect();
        assert_eq!(left, vec![2, 4]);
        assert!(matches!(ks.material("k1", 1), Err(KeyError::NoSuchVersion(..))));
        assert!(ks.material("k1", 2).is_ok());
        assert_eq!(ks.prune_key("k1", &|_| false).unwrap(), vec![2]);
        assert_eq!(ks.current_version("k1").unwrap(), 4, "the newest always stays");
    }

    #[test]
    fn external_keys_hold_no_material() {
        let (d, mut ks) = fresh();
        ks.set_provider("exec:/bin/kms").unwrap();
        ks.create_external_key("kx", 0, 3).unwrap();
        assert_eq!(ks.current_version("kx").unwrap(), 3);
        assert!(ks.roll_key("kx").is_err(), "rolled by the provider, not here");
        ks.add_external_version("kx", 4).unwrap();
        assert!(ks.add_external_version("kx", 4).is_err(), "versions only grow");
        let text = std::fs::read_to_string(d.path().join(".ezfs/keystore.json")).unwrap();
        assert!(!text.contains("sealed"), "{text}");
        let ks2 = Keystore::unlock(d.path(), b"pw").unwrap();
        assert!(ks2.key("kx").unwrap().external);
        assert_eq!(ks2.body().provider.as_deref(), Some("exec:/bin/kms"));
    }

    #[test]
    fn keystores_without_the_new_fields_still_authenticate() {
        // the fields added for ACLs and external keys are left out when empty, so the
        // MAC over a keystore written before they existed still verifies
        let (d, mut ks) = fresh();
        ks.create_key("k1", 0).unwrap();
        let text = std::fs::read_to_string(d.path().join(".ezfs/keystore.json")).unwrap();
        for field in ["acl", "external", "provider"] {
            assert!(!text.contains(field), "{field} written while empty:\n{text}");
        }
        Keystore::unlock(d.path(), b"pw").unwrap();
    }

    use crate::keys::LocalProvider as LocalProviderForTest;
}
