//! Zone keys: the key-provider interface the filesystem uses, and the default provider,
//! a passphrase-sealed keystore file in `BACKING/.ezfs/`.

pub mod atomic;
pub mod audit;
pub mod dek;
pub mod exec;
pub mod external;
pub mod keystore;
pub mod kmip;
pub mod kms;
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
    /// The passphrase does not unseal the keystore's master key.
    #[error("wrong passphrase")]
    WrongPassphrase,
    /// The keystore holds no key of this name.
    #[error("no key named '{0}'")]
    NoSuchKey(String),
    /// The key has no such version.
    #[error("key '{0}' has no version {1}")]
    NoSuchVersion(String, u32),
    /// A key to create has the name of one the keystore holds.
    #[error("a key named '{0}' already exists")]
    KeyExists(String),
    /// A key to delete is the key of zones.
    #[error("key '{name}' is still used by {} zone(s) ({}); remove those zones first", zones.len(), zones.join(", "))]
    KeyInUse {
        /// The key's name.
        name: String,
        /// The roots of the zones that use it, relative to the mount root.
        zones: Vec<String>,
    },
    /// A key name breaks [`validate_key_name`].
    #[error("invalid key name '{}': use 1 to 64 characters from A-Z a-z 0-9 . _ -", crate::text::shorten(.0, 80))]
    BadName(String),
    /// The keystore file does not parse or authenticate.
    #[error("keystore {path} is corrupt: {why}")]
    Corrupt {
        /// The file read: the keystore, or a copy of it.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The backing dir has no `.ezfs` directory.
    #[error("{0} is not an ezfs backing directory (no .ezfs); run 'ezfs init' first")]
    NotInitialized(PathBuf),
    /// `.ezfs` exists but holds no keystore file.
    #[error(
        "{0}/.ezfs exists but its keystore.json is missing: restore it from a backup ('ezfs keystore \
         backup' makes one; see ezfs(1), BACKUP AND RECOVERY), or remove {0}/.ezfs to start over (files \
         in zones then cannot be read)"
    )]
    KeystoreMissing(PathBuf),
    /// The keystore file's format version is not this program's.
    #[error("unsupported keystore format version {0}")]
    UnsupportedFormat(u32),
    /// The key version does not unwrap a file's data key (a damaged or foreign header).
    #[error("cannot unwrap the data key with {0}@{1}: header authentication failed")]
    Unwrap(String, u32),
    /// A file operation on keys failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// What the system call returned.
        #[source]
        source: std::io::Error,
    },
    /// No KMS endpoint answered (network, TLS or timeout): files whose DEK is not in
    /// memory cannot be opened until one does.
    #[error("KMS unavailable: {0}")]
    KmsUnavailable(String),
    /// Anything else, in one sentence (a key provider's failure, a bad setting).
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
