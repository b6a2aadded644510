//! Zone keys: the key-provider interface the filesystem uses, and the default provider,
//! a passphrase-sealed keystore file in `BACKING/.ezfs/`.

pub mod atomic;
pub mod exec;
pub mod keystore;
pub mod passphrase;
pub mod provider;
pub mod recovery;
pub mod service;

pub use keystore::{KdfParams, Keystore};
pub use provider::{KeyProvider, LocalProvider};
pub use service::ZoneKeys;

use std::path::PathBuf;

/// Anything that can go wrong with keys. Messages are one clear sentence each and never
/// contain key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("wrong passphrase")]
    WrongPassphrase,
    #[error("no key named '{0}'")]
    NoSuchKey(String),
    #[error("key '{0}' has no version {1}")]
    NoSuchVersion(String, u32),
    #[error("a key named '{0}' already exists")]
    KeyExists(String),
    #[error("key '{name}' is still used by {} zone(s) ({}); remove those zones first", zones.len(), zones.join(", "))]
    KeyInUse { name: String, zones: Vec<String> },
    #[error("invalid key name '{}': use 1 to 64 characters from A-Z a-z 0-9 . _ -", crate::text::shorten(.0, 80))]
    BadName(String),
    #[error("keystore {path} is corrupt: {why}")]
    Corrupt { path: PathBuf, why: String },
    #[error("{0} is not an ezfs backing directory (no .ezfs); run 'ezfs init' first")]
    NotInitialized(PathBuf),
    #[error(
        "{0}/.ezfs exists but its keystore.json is missing: restore it from a backup ('ezfs keystore \
         backup' makes one; see ezfs(1), BACKUP AND RECOVERY), or remove {0}/.ezfs to start over (files \
         in zones then cannot be read)"
    )]
    KeystoreMissing(PathBuf),
    #[error("unsupported keystore format version {0}")]
    UnsupportedFormat(u32),
    #[error("cannot unwrap the data key with {0}@{1}: header authentication failed")]
    Unwrap(String, u32),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

impl KeyError {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> KeyError {
        let context = context.into();
        move |source| KeyError::Io { context, source }
    }
}

/// Checks a key name: short, printable, safe in file headers and JSON.
pub fn validate_key_name(name: &str) -> Result<(), KeyError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(KeyError::BadName(name.to_owned()))
    }
}
