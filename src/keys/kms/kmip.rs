//! The KMIP client ([`crate::keys::kmip`]) as a [`Kms`]: its errors become key errors,
//! an unreachable KMS distinctly (the filesystem keeps serving what needs no KMS).

use super::Kms;
use crate::keys::kmip::client::KmipClient;
use crate::keys::kmip::{KmipConfig, KmipError};
use crate::keys::KeyError;
use std::sync::Arc;
use zeroize::Zeroizing;

fn key_error(e: KmipError) -> KeyError {
    match e {
        KmipError::Unavailable(why) => KeyError::KmsUnavailable(why),
        other => KeyError::Other(other.to_string()),
    }
}

/// Checks a `kmip://…` setting (the URL and its certificate files) without connecting.
pub fn check(setting: &str) -> Result<KmipConfig, KeyError> {
    let cfg = KmipConfig::parse(setting).map_err(key_error)?;
    KmipClient::new(cfg.clone()).map_err(key_error)?;
    warn_if_exposed(&cfg);
    Ok(cfg)
}

/// A client of the KMIP servers of setting `kmip://…`; it connects on first use.
pub fn connect(setting: &str) -> Result<Arc<dyn Kms>, KeyError> {
    let cfg = KmipConfig::parse(setting).map_err(key_error)?;
    warn_if_exposed(&cfg);
    Ok(Arc::new(KmipClient::new(cfg).map_err(key_error)?))
}

/// The client key opens the KMS to whoever reads it: say so when others may.
fn warn_if_exposed(cfg: &KmipConfig) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(&cfg.key) {
        let mode = m.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            log::warn!(
                "the KMIP client key {} is readable by other users (mode {mode:03o}): whoever reads \
                 it can have the KMS unwrap data keys; chmod 600 it",
                cfg.key.display()
            );
        }
    }
}

impl Kms for KmipClient {
    fn create_key(&self, name: &str) -> Result<String, KeyError> {
        KmipClient::create_key(self, name).map_err(key_error)
    }

    fn locate(&self, name: &str) -> Result<Vec<String>, KeyError> {
        KmipClient::locate(self, name).map_err(key_error)
    }

    fn state(&self, uid: &str) -> Result<String, KeyError> {
        KmipClient::state(self, uid)
            .map(|s| format!("{s:?}"))
            .map_err(key_error)
    }

    fn encrypt(&self, uid: &str, aad: &[u8], plain: &[u8]) -> Result<Vec<u8>, KeyError> {
        KmipClient::encrypt(self, uid, aad, plain).map_err(key_error)
    }

    fn encrypt_many(&self, uid: &str, aad: &[u8], plains: &[&[u8]]) -> Result<Vec<Vec<u8>>, KeyError> {
        KmipClient::encrypt_many(self, uid, aad, plains).map_err(key_error)
    }

    fn decrypt(&self, uid: &str, aad: &[u8], blob: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        KmipClient::decrypt(self, uid, aad, blob).map_err(key_error)
    }

    fn retire(&self, uid: &str) -> Result<(), KeyError> {
        // KMIP: an active key is revoked (deactivated) before it may be destroyed
        KmipClient::revoke(self, uid).map_err(key_error)?;
        KmipClient::destroy(self, uid).map_err(key_error)
    }
}
