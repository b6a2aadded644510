//! The interface between the filesystem and wherever zone keys live.
//!
//! The filesystem never sees zone-key material: it asks the provider to wrap a new
//! file's DEK and to unwrap an EDEK. An external KMS can implement this trait without
//! any change to the file format or the filesystem.

use super::exec::ExecProvider;
use super::{KeyError, Keystore};
use crate::crypto::{Key, WRAPPED_KEY_LEN};
use parking_lot::RwLock;
use std::sync::OnceLock;

/// Wraps and unwraps data keys with named, versioned zone keys.
pub trait KeyProvider: Send + Sync {
    /// The version new files under key `name` use.
    fn current_version(&self, name: &str) -> Result<u32, KeyError>;
    /// Wraps `dek` with `name@version`, binding `aad`.
    fn wrap(
        &self,
        name: &str,
        version: u32,
        aad: &[u8],
        dek: &Key,
    ) -> Result<[u8; WRAPPED_KEY_LEN], KeyError>;
    /// Unwraps an EDEK made by [`KeyProvider::wrap`] with the same `aad`.
    fn unwrap(
        &self,
        name: &str,
        version: u32,
        aad: &[u8],
        edek: &[u8; WRAPPED_KEY_LEN],
    ) -> Result<Key, KeyError>;
}

/// The local keystore as a provider, handing keys marked external to the configured
/// external program. Reloads the file when asked for a key or version it does not know
/// yet, so keys created by the command line while mounted work at once.
pub struct LocalProvider {
    store: RwLock<Keystore>,
    external: OnceLock<Result<ExecProvider, String>>,
}

impl LocalProvider {
    /// A provider over the unlocked keystore `store`.
    pub fn new(store: Keystore) -> LocalProvider {
        LocalProvider {
            store: RwLock::new(store),
            external: OnceLock::new(),
        }
    }

    /// The external provider, if the keystore names one.
    pub fn external(&self) -> Result<&ExecProvider, KeyError> {
        let setting = self.store.read().body().provider.clone();
        let Some(setting) = setting else {
            return Err(KeyError::Other("no external key provider is configured".into()));
        };
        self.external
            .get_or_init(|| ExecProvider::from_setting(&setting).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| KeyError::Other(e.clone()))
    }

    /// Whether key `name` lives in the external provider.
    fn is_external(&self, name: &str) -> Result<bool, KeyError> {
        self.with_reload(|ks| Ok(ks.key(name)?.external))
    }

    /// The keystore, for zone registration and listing.
    pub fn store(&self) -> &RwLock<Keystore> {
        &self.store
    }

    /// Re-reads the keystore file.
    pub fn reload(&self) -> Result<(), KeyError> {
        self.store.write().reload()
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

    fn wrap(
        &self,
        name: &str,
        version: u32,
        aad: &[u8],
        dek: &Key,
    ) -> Result<[u8; WRAPPED_KEY_LEN], KeyError> {
        if self.is_external(name)? {
            return self.external()?.wrap(name, version, aad, dek);
        }
        self.with_reload(|ks| Ok(ks.material(name, version)?.cipher().wrap_key(aad, dek)))
    }

    fn unwrap(
        &self,
        name: &str,
        version: u32,
        aad: &[u8],
        edek: &[u8; WRAPPED_KEY_LEN],
    ) -> Result<Key, KeyError> {
        if self.is_external(name)? {
            return self.external()?.unwrap(name, version, aad, edek);
        }
        self.with_reload(|ks| {
            ks.material(name, version)?
                .cipher()
                .unwrap_key(aad, edek)
                .map_err(|_| KeyError::Unwrap(name.into(), version))
        })
    }
}
