//! The name ciphers of a zone whose file names are encrypted: its name secret(s) from
//! the registry, unwrapped through the key provider; and making and re-wrapping them.

use crate::crypto::names::NameCipher;
use crate::crypto::Key;
use crate::format::names::secret_aad;
use crate::keys::keystore::{NameKeys, WrappedSecret};
use crate::keys::{KeyError, KeyProvider};
use std::sync::Arc;

/// The unwrapped ciphers of a zone's names.
pub struct NameCiphers {
    /// What names are encrypted with.
    pub current: Arc<NameCipher>,
    /// During `zone reencrypt --data`: what names are moving to; new names use it.
    pub next: Option<Arc<NameCipher>>,
}

impl NameCiphers {
    /// The cipher new names get.
    pub fn for_new(&self) -> &Arc<NameCipher> {
        self.next.as_ref().unwrap_or(&self.current)
    }

    /// The ciphers of the secrets `keys` of zone `zone_id` under `key`, unwrapped by
    /// `provider`.
    pub fn unwrap(
        provider: &dyn KeyProvider,
        zone_id: &[u8; 16],
        key: &str,
        keys: &NameKeys,
    ) -> Result<NameCiphers, KeyError> {
        Ok(NameCiphers {
            current: Arc::new(unwrap_secret(provider, zone_id, key, &keys.current)?),
            next: match &keys.next {
                Some(n) => Some(Arc::new(unwrap_secret(provider, zone_id, key, n)?)),
                None => None,
            },
        })
    }
}

/// The name cipher of a wrapped secret of zone `zone_id` under `key`.
pub fn unwrap_secret(
    provider: &dyn KeyProvider,
    zone_id: &[u8; 16],
    key: &str,
    w: &WrappedSecret,
) -> Result<NameCipher, KeyError> {
    Ok(NameCipher::derive(
        &unwrap_raw(provider, zone_id, key, w)?,
        zone_id,
    ))
}

/// The secret `w` of zone `zone_id` under `key`, unwrapped.
fn unwrap_raw(
    provider: &dyn KeyProvider,
    zone_id: &[u8; 16],
    key: &str,
    w: &WrappedSecret,
) -> Result<Key, KeyError> {
    let wrapped = crate::text::unhex_vec(&w.wrapped)
        .ok_or_else(|| KeyError::Other("the registry holds a bad wrapped name secret".into()))?;
    provider.unwrap(key, w.version, &secret_aad(zone_id, key, w.version), &wrapped)
}

/// A new name secret for zone `zone_id`, wrapped by `key@version`.
pub fn new_secret(
    provider: &dyn KeyProvider,
    zone_id: &[u8; 16],
    key: &str,
    version: u32,
) -> Result<WrappedSecret, KeyError> {
    let secret = Key::random();
    rewrap_secret(provider, zone_id, key, version, &secret)
}

/// `secret` wrapped by `key@version` for zone `zone_id`.
fn rewrap_secret(
    provider: &dyn KeyProvider,
    zone_id: &[u8; 16],
    key: &str,
    version: u32,
    secret: &Key,
) -> Result<WrappedSecret, KeyError> {
    let wrapped = provider.wrap(key, version, &secret_aad(zone_id, key, version), secret)?;
    Ok(WrappedSecret {
        version,
        wrapped: crate::text::hex(&wrapped),
    })
}

/// `w` re-wrapped by `key@version` (the same secret: names stay as they are).
pub fn rewrap(
    provider: &dyn KeyProvider,
    zone_id: &[u8; 16],
    key: &str,
    version: u32,
    w: &WrappedSecret,
) -> Result<WrappedSecret, KeyError> {
    rewrap_secret(
        provider,
        zone_id,
        key,
        version,
        &unwrap_raw(provider, zone_id, key, w)?,
    )
}
