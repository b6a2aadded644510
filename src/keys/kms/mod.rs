//! Zone keys held by a KMS (KMIP): the key material never reaches ezfs; the KMS wraps
//! and unwraps data keys with it.
//!
//! Like HDFS's KMS client, a mount keeps pre-wrapped data keys in a pool ([`pool`]) so
//! creating a file does not wait for the KMS, unwraps each file's DEK once per open
//! (the inode's open state is shared by concurrent opens), can keep unwrapped DEKs of
//! recently closed files for a short time ([`cache`]), and writes every unwrap and key
//! operation to the audit log ([`super::audit`]).
//!
//! Each key version is one KMS object named `ezfs/NAME/VERSION` (AES-256, usage
//! encrypt|decrypt), looked up by name; a file's header carries the object's unique
//! id, which must be the one the KMS returns for that name before anything is
//! decrypted, so a header can never make the KMS unwrap under another key.

pub mod cache;
pub mod kmip;
pub mod pool;

use super::audit::{AuditLog, Event};
use super::KeyError;
use crate::crypto::{Key, KEY_LEN};
use cache::DekCache;
use parking_lot::Mutex;
use pool::{EdekPool, PoolOptions, Pooled};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// What a KMS must do for ezfs: a small interface, implemented by the KMIP client
/// and by test doubles.
pub trait Kms: Send + Sync {
    /// Creates and activates an AES-256 key named `name`; returns its unique id.
    fn create_key(&self, name: &str) -> Result<String, KeyError>;
    /// The unique ids of the objects named `name`.
    fn locate(&self, name: &str) -> Result<Vec<String>, KeyError>;
    /// The object's state, in words (`Active`, `Deactivated`, `Destroyed`, …).
    fn state(&self, uid: &str) -> Result<String, KeyError>;
    /// Encrypts `plain` under key `uid`, binding `aad`; returns an opaque blob.
    fn encrypt(&self, uid: &str, aad: &[u8], plain: &[u8]) -> Result<Vec<u8>, KeyError>;
    /// Encrypts each of `plains` like [`Kms::encrypt`]; a KMS that takes batches does
    /// it in one round trip (the pool's refills).
    fn encrypt_many(&self, uid: &str, aad: &[u8], plains: &[&[u8]]) -> Result<Vec<Vec<u8>>, KeyError> {
        plains.iter().map(|p| self.encrypt(uid, aad, p)).collect()
    }
    /// Decrypts a blob made by [`Kms::encrypt`] with the same `aad`.
    fn decrypt(&self, uid: &str, aad: &[u8], blob: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError>;
    /// Revokes and destroys key `uid` (its material is gone from the KMS).
    fn retire(&self, uid: &str) -> Result<(), KeyError>;
}

/// How long a create waits for a refill under way before asking the KMS itself.
const POOL_WAIT: Duration = Duration::from_secs(10);

/// The KMS object name of `name@version`.
pub fn object_name(name: &str, version: u32) -> String {
    format!("ezfs/{name}/{version}")
}

/// The associated data a DEK is wrapped with in the KMS: the key version it belongs
/// to (the rest of the header is bound by the header MAC, see ezfs-format(5)).
fn dek_aad(name: &str, version: u32) -> Vec<u8> {
    format!("ezfs dek {name}@{version}").into_bytes()
}

/// How long a DEK stays cached after use unless the mount says otherwise.
pub const DEFAULT_DEK_CACHE_TTL: Duration = Duration::from_secs(30);

/// Options of a mount's KMS client side.
#[derive(Debug, Clone)]
pub struct KmsOptions {
    /// The EDEK pool.
    pub pool: PoolOptions,
    /// How long an unwrapped DEK of a closed file is kept (zero: not at all).
    pub dek_cache_ttl: Duration,
    /// At most this many cached DEKs.
    pub dek_cache_max: usize,
}

impl Default for KmsOptions {
    fn default() -> Self {
        KmsOptions {
            pool: PoolOptions::default(),
            // short: long enough that a file read soon after it was written or last
            // opened costs no round trip, short enough that a key revoked in the KMS
            // alone stops serving soon (key changes made through ezfs empty it at once)
            dek_cache_ttl: DEFAULT_DEK_CACHE_TTL,
            dek_cache_max: 10_000,
        }
    }
}

/// The KMS client side of a mount, for `ezfs status`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct KmsStatus {
    /// Pre-wrapped data keys ready for creates, over every key version.
    pub pooled_edeks: usize,
    /// Unwrapped data keys of closed files held by the DEK cache.
    pub cached_deks: usize,
    /// Whether the last KMS request got an answer.
    pub reachable: bool,
}

/// The daemon's view of a KMS: wraps, unwraps, pools and audits.
pub struct KmsKeys {
    kms: Arc<dyn Kms>,
    /// `name@version` → the KMS's unique id, as the KMS named it.
    ids: Mutex<HashMap<(String, u32), String>>,
    pool: Arc<EdekPool>,
    cache: DekCache,
    audit: Option<AuditLog>,
    /// Whether the last KMS call failed for want of a KMS (logged once per outage).
    down: AtomicBool,
}

impl KmsKeys {
    /// A KMS client side over `kms`; audit lines go to `audit` (None: not logged).
    pub fn new(kms: Arc<dyn Kms>, options: KmsOptions, audit: Option<AuditLog>) -> Arc<KmsKeys> {
        Arc::new_cyclic(|weak: &std::sync::Weak<KmsKeys>| {
            let weak = weak.clone();
            let fill = move |name: &str, version: u32, n: usize| -> Result<Vec<Pooled>, KeyError> {
                match weak.upgrade() {
                    Some(me) => me.generate(name, version, n),
                    None => Ok(Vec::new()),
                }
            };
            KmsKeys {
                kms,
                ids: Mutex::new(HashMap::new()),
                pool: EdekPool::new(options.pool.clone(), Box::new(fill)),
                cache: DekCache::new(options.dek_cache_ttl, options.dek_cache_max),
                audit,
                down: AtomicBool::new(false),
            }
        })
    }

    /// The KMS behind this client side.
    pub fn kms(&self) -> &Arc<dyn Kms> {
        &self.kms
    }

    fn audit<T>(&self, e: Event<'_>, started: Instant, r: &Result<T, KeyError>) {
        if let Some(a) = &self.audit {
            a.record(&e, started, r);
        }
    }

    /// Notes whether the KMS answered: one log line when it goes away, one when it is
    /// back.
    fn note<T>(&self, r: &Result<T, KeyError>) {
        let down = matches!(r, Err(KeyError::KmsUnavailable(_)));
        if self.down.swap(down, Ordering::AcqRel) != down {
            match r {
                Err(e) if down => log::error!(
                    "{e}: opens of files in KMS zones fail with EIO until it answers (open files and \
                     creates served from the EDEK pool go on)"
                ),
                _ => log::warn!("the KMS answers again"),
            }
        }
    }

    /// The KMS's unique id of `name@version`.
    pub fn key_id(&self, name: &str, version: u32) -> Result<String, KeyError> {
        if let Some(id) = self.ids.lock().get(&(name.to_owned(), version)) {
            return Ok(id.clone());
        }
        let found = self.kms.locate(&object_name(name, version));
        self.note(&found);
        let mut found = found?;
        let id = match found.len() {
            // the header has room for ids of 1 to 255 bytes
            1 if (1..=255).contains(&found[0].len()) => found.remove(0),
            1 => {
                return Err(KeyError::Other(format!(
                    "the KMS's id of {name}@{version} is {} bytes long; ezfs takes 1 to 255",
                    found[0].len()
                )))
            }
            0 => return Err(KeyError::NoSuchVersion(name.into(), version)),
            n => {
                return Err(KeyError::Other(format!(
                    "the KMS holds {n} objects named {}: ezfs cannot tell which is {name}@{version}",
                    object_name(name, version)
                )))
            }
        };
        self.ids.lock().insert((name.to_owned(), version), id.clone());
        Ok(id)
    }

    /// Makes `n` fresh (DEK, EDEK) pairs under `name@version` (the pool's refill).
    fn generate(&self, name: &str, version: u32, n: usize) -> Result<Vec<Pooled>, KeyError> {
        let started = Instant::now();
        let r = (|| {
            let key_id = self.key_id(name, version)?;
            let deks: Vec<Key> = (0..n).map(|_| Key::random()).collect();
            let plains: Vec<&[u8]> = deks.iter().map(|k| &k.expose()[..]).collect();
            let r = self.kms.encrypt_many(&key_id, &dek_aad(name, version), &plains);
            self.note(&r);
            let edeks = r?;
            if edeks.len() != n {
                return Err(KeyError::Other(format!(
                    "the KMS wrapped {} of {n} data keys",
                    edeks.len()
                )));
            }
            Ok(deks
                .into_iter()
                .zip(edeks)
                .map(|(dek, edek)| Pooled {
                    dek,
                    key_id: key_id.clone(),
                    edek,
                })
                .collect())
        })();
        let e = Event {
            op: "GENERATE",
            key: name,
            version: Some(version),
            file: None,
            extra: format!("n={n}"),
        };
        self.audit(e, started, &r);
        r
    }

    /// A fresh DEK and its EDEK for a new file under `name@version`: from the pool,
    /// or, when it is empty, from the KMS now.
    pub fn new_dek(&self, name: &str, version: u32) -> Result<Pooled, KeyError> {
        let p = match self.pool.take(name, version, POOL_WAIT) {
            Some(p) => p,
            None => {
                let p = self.generate(name, version, 1)?.pop().expect("one generated");
                self.pool.retry_now(name, version);
                p
            }
        };
        // the new file is read back soon, often after it was closed
        self.cache.put(&p.key_id, &p.edek, &p.dek);
        Ok(p)
    }

    /// `dek` wrapped under `name@version` (a re-wrap keeps the DEK): (key id, EDEK).
    pub fn wrap_dek(&self, name: &str, version: u32, dek: &Key) -> Result<(String, Vec<u8>), KeyError> {
        let started = Instant::now();
        let r = self.key_id(name, version).and_then(|id| {
            let r = self.kms.encrypt(&id, &dek_aad(name, version), dek.expose());
            self.note(&r);
            r.map(|edek| (id, edek))
        });
        let e = Event {
            op: "WRAP",
            key: name,
            version: Some(version),
            file: None,
            extra: String::new(),
        };
        self.audit(e, started, &r);
        r
    }

    /// The DEK of file `file_id` whose header says `name@version` is KMS object
    /// `key_id` and holds `edek`. The caller checks the header MAC with it.
    pub fn unwrap_dek(
        &self,
        name: &str,
        version: u32,
        key_id: &str,
        edek: &[u8],
        file_id: &[u8; 16],
    ) -> Result<Key, KeyError> {
        if let Some(k) = self.cache.get(key_id, edek) {
            return Ok(k);
        }
        let started = Instant::now();
        let r = self.unwrap_uncached(name, version, key_id, edek);
        let e = Event {
            op: "UNWRAP",
            key: name,
            version: Some(version),
            file: Some(file_id),
            extra: String::new(),
        };
        self.audit(e, started, &r);
        if let Ok(k) = &r {
            self.cache.put(key_id, edek, k);
        }
        r
    }

    fn unwrap_uncached(&self, name: &str, version: u32, key_id: &str, edek: &[u8]) -> Result<Key, KeyError> {
        let want = self.key_id(name, version)?;
        if want != key_id {
            return Err(KeyError::Other(format!(
                "the header names KMS object {key_id} for {name}@{version}, but the KMS's is {want}"
            )));
        }
        let r = self.kms.decrypt(key_id, &dek_aad(name, version), edek);
        self.note(&r);
        let plain = r?;
        Key::from_slice(&plain).ok_or_else(|| {
            KeyError::Other(format!(
                "the KMS returned {} bytes for a {KEY_LEN}-byte data key of {name}@{version}",
                plain.len()
            ))
        })
    }

    /// Wraps a secret other than a DEK (a zone's name secret) binding `aad`.
    pub fn wrap_secret(
        &self,
        name: &str,
        version: u32,
        aad: &[u8],
        secret: &Key,
    ) -> Result<Vec<u8>, KeyError> {
        let id = self.key_id(name, version)?;
        let r = self.kms.encrypt(&id, aad, secret.expose());
        self.note(&r);
        r
    }

    /// Unwraps a secret made by [`KmsKeys::wrap_secret`].
    pub fn unwrap_secret(
        &self,
        name: &str,
        version: u32,
        aad: &[u8],
        wrapped: &[u8],
    ) -> Result<Key, KeyError> {
        let started = Instant::now();
        let r = self.key_id(name, version).and_then(|id| {
            let r = self.kms.decrypt(&id, aad, wrapped);
            self.note(&r);
            let plain = r?;
            Key::from_slice(&plain).ok_or_else(|| KeyError::Unwrap(name.into(), version))
        });
        let e = Event {
            op: "UNWRAP_NAMES",
            key: name,
            version: Some(version),
            file: None,
            extra: String::new(),
        };
        self.audit(e, started, &r);
        r
    }

    /// Starts filling the pool of `name@version` in the background (a mount warms the
    /// pools of its zones' keys).
    pub fn warm(&self, name: &str, version: u32) {
        self.pool.warm(name, version);
    }

    /// Forgets what the key state may have changed: cached ids and DEKs, and the pooled
    /// EDEKs of versions other than `current` says (a roll drains the old version's
    /// pool; a revoke or grant must not leave DEKs behind).
    pub fn flush(&self, current: &dyn Fn(&str) -> Option<u32>) {
        self.ids.lock().clear();
        self.cache.clear();
        self.pool.retain_current(current);
    }

    /// What `ezfs status` shows of the KMS client side.
    pub fn status(&self) -> KmsStatus {
        KmsStatus {
            pooled_edeks: self.pool.len(),
            cached_deks: self.cache.len(),
            reachable: !self.down.load(Ordering::Acquire),
        }
    }
}
