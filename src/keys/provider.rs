//! The interface between the filesystem and wherever zone keys live.
//!
//! The filesystem never sees zone-key material: it asks the provider to wrap a new
//! file's DEK and to unwrap an EDEK. An external KMS can implement this trait without
//! any change to the file format or the filesystem.

use super::{KeyError, Keystore};
use crate::crypto::{Key, WRAPPED_KEY_LEN};
use parking_lot::RwLock;

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

/// The local keystore as a provider. Reloads the file when asked for a key or version
/// it does not know yet, so keys created by the command line while mounted work at once.
pub struct LocalProvider {
    store: RwLock<Keystore>,
}

impl LocalProvider {
    pub fn new(store: Keystore) -> LocalProvider {
        LocalProvider {
            store: RwLock::new(store),
        }
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
        self.with_reload(|ks| Ok(ks.material(name, version)?.cipher().wrap_key(aad, dek)))
    }

    fn unwrap(
        &self,
        name: &str,
        version: u32,
        aad: &[u8],
        edek: &[u8; WRAPPED_KEY_LEN],
    ) -> Result<Key, KeyError> {
        self.with_reload(|ks| {
            ks.material(name, version)?
                .cipher()
                .unwrap_key(aad, edek)
                .map_err(|_| KeyError::Unwrap(name.into(), version))
        })
    }
}
