//! The interface between the filesystem and wherever zone keys live.
//!
//! The filesystem never sees zone-key material: it asks the provider to wrap a new
//! file's DEK and to unwrap an EDEK. An external KMS can implement this trait without
//! any change to the file format or the filesystem.

use super::exec::ExecProvider;
use super::external::External;
use super::kms::{KmsKeys, KmsOptions};
use super::{KeyError, Keystore};
use crate::crypto::Key;
use parking_lot::RwLock;
use std::sync::{Arc, OnceLock};

/// Wraps and unwraps data keys with named, versioned zone keys.
pub trait KeyProvider: Send + Sync {
    /// The version new files under key `name` use.
    fn current_version(&self, name: &str) -> Result<u32, KeyError>;
    /// Wraps `dek` with `name@version`, binding `aad` (60 bytes for a local key).
    fn wrap(&self, name: &str, version: u32, aad: &[u8], dek: &Key) -> Result<Vec<u8>, KeyError>;
    /// Unwraps an EDEK made by [`KeyProvider::wrap`] with the same `aad`.
    fn unwrap(&self, name: &str, version: u32, aad: &[u8], edek: &[u8]) -> Result<Key, KeyError>;
    /// The KMS that holds key `name`, if a KMS does: its files' DEKs are wrapped there
    /// (version 2 headers, see [`super::dek`]).
    fn kms(&self, _name: &str) -> Result<Option<Arc<KmsKeys>>, KeyError> {
        Ok(None)
    }
}

/// The local keystore as a provider, handing keys marked external to the configured
/// external program. Reloads the file when asked for a key or version it does not know
/// yet, so keys created by the command line while mounted work at once.
pub struct LocalProvider {
    store: RwLock<Keystore>,
    external: OnceLock<Result<External, String>>,
    kms_options: KmsOptions,
}

impl LocalProvider {
    /// A provider over the unlocked keystore `store`.
    pub fn new(store: Keystore) -> LocalProvider {
        Self::with_kms_options(store, KmsOptions::default())
    }

    /// A provider over `store` whose KMS client side (if the keystore names a KMS)
    /// pools and caches as `kms_options` say.
    pub fn with_kms_options(store: Keystore, kms_options: KmsOptions) -> LocalProvider {
        LocalProvider {
            store: RwLock::new(store),
            external: OnceLock::new(),
            kms_options,
        }
    }

    /// The external provider, if the keystore names one (connected on first use).
    pub fn external(&self) -> Result<&External, KeyError> {
        let (setting, dir) = {
            let store = self.store.read();
            (store.body().provider.clone(), store.dir().to_path_buf())
        };
        let Some(setting) = setting else {
            return Err(KeyError::Other("no external key provider is configured".into()));
        };
        self.external
            .get_or_init(|| {
                External::from_setting(&setting, &dir, &self.kms_options).map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| KeyError::Other(e.clone()))
    }

    /// The KMS client side, if the keystore names a KMS and it has been set up.
    pub fn kms_client(&self) -> Option<&Arc<KmsKeys>> {
        match self.external.get() {
            Some(Ok(External::Kms(k))) => Some(k),
            _ => None,
        }
    }

    /// The external program provider, if the keystore names one.
    pub fn exec(&self) -> Result<&ExecProvider, KeyError> {
        match self.external()? {
            External::Exec(p) => Ok(p),
            External::Kms(_) => Err(KeyError::Other("the key provider is a KMS, not a program".into())),
        }
    }

    /// Whether key `name` lives in the external provider.
    fn is_external(&self, name: &str) -> Result<bool, KeyError> {
        self.with_reload(|ks| Ok(ks.key(name)?.external))
    }

    /// The keystore, for zone registration and listing.
    pub fn store(&self) -> &RwLock<Keystore> {
        &self.store
    }

    /// Re-reads the keystore file; the KMS client side forgets what the change may
    /// have made stale (key ids, cached DEKs, the pools of versions no longer current).
    pub fn reload(&self) -> Result<(), KeyError> {
        self.store.write().reload()?;
        if let Some(k) = self.kms_client() {
            let store = self.store.read();
            k.flush(&|name| store.current_version(name).ok());
        }
        Ok(())
    }

    /// Runs `f` on the keystore; if it fails for an unknown key or version, reloads once
    /// and tries again.
    fn with_reload<T>(&self, f: impl Fn(&Keystore) -> Result<T, KeyError>) -> Result<T, KeyError> {
        // bind first: a guard in the match scrutinee would live through reload()
        let first = f(&self.store.read());
        match first {
            Err(KeyError::NoSuchKey(_) | KeyError::NoSuchVersion(..)) => {
                self.reload()?;
                f(&self.store.read())
            }
            other => other,
        }
    }
}

impl KeyProvider for LocalProvider {
    fn current_version(&self, name: &str) -> Result<u32, KeyError> {
        self.with_reload(|ks| ks.current_version(name))
    }

    fn wrap(&self, name: &str, version: u32, aad: &[u8], dek: &Key) -> Result<Vec<u8>, KeyError> {
        if self.is_external(name)? {
            return match self.external()? {
                External::Exec(p) => p.wrap(name, version, aad, dek).map(|w| w.to_vec()),
                External::Kms(k) => k.wrap_secret(name, version, aad, dek),
            };
        }
        self.with_reload(|ks| Ok(ks.material(name, version)?.cipher().wrap_key(aad, dek).to_vec()))
    }

    fn unwrap(&self, name: &str, version: u32, aad: &[u8], edek: &[u8]) -> Result<Key, KeyError> {
        if self.is_external(name)? {
            return match self.external()? {
                External::Exec(p) => {
                    let edek = edek
                        .try_into()
                        .map_err(|_| KeyError::Unwrap(name.into(), version))?;
                    p.unwrap(name, version, aad, edek)
                }
                External::Kms(k) => k.unwrap_secret(name, version, aad, edek),
            };
        }
        self.with_reload(|ks| {
            ks.material(name, version)?
                .cipher()
                .unwrap_key(aad, edek)
                .map_err(|_| KeyError::Unwrap(name.into(), version))
        })
    }

    fn kms(&self, name: &str) -> Result<Option<Arc<KmsKeys>>, KeyError> {
        if !self.is_external(name)? {
            return Ok(None);
        }
        match self.external()? {
            External::Kms(k) => Ok(Some(k.clone())),
            External::Exec(_) => Ok(None),
        }
    }
}
