//! Encrypted file names, as a zone created with `--encrypt-names` stores them (see
//! ezfs-format(5), "Encrypted names", for the bytes).
//!
//! - A name is padded to a multiple of 16 bytes (PKCS#7), sealed with AES-SIV under
//!   the associated data `"ezfs-name"` and its directory's 16-byte *diriv*, and
//!   stored as unpadded base64url: deterministic, so a lookup encrypts once; bound to
//!   its directory, so a name moved to another directory fails to open.
//! - Each directory's diriv is a small file, [`DIRIV_FILE`], written before the
//!   directory gets its name (a file, not an xattr: `cp -a`, `tar` and `rsync` keep
//!   it; it moves with the directory, so renaming one renames no child).
//! - An encoded name longer than [`MAX_STORED`] is stored as [`LONG_PREFIX`] and the
//!   base64url SHA-256 of the encoded name, with the encoded name in a sidecar file
//!   beside it ([`sidecar`]), as gocryptfs does.
//! - A symlink target is sealed with a random 16-byte nonce as associated data (two
//!   links to one target differ) and stored as base64url of `nonce || sealed`.
//!
//! Base64url characters never start a name with '.', so no encrypted name meets the
//! reserved `.ezfs-*` names.

use crate::crypto::names::{NameCipher, SIV_TAG_LEN};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::Digest;

/// The file holding a directory's diriv (16 random bytes) in a name-encrypted zone.
pub const DIRIV_FILE: &str = ".ezfs-diriv";
/// Length of a diriv.
pub const DIRIV_LEN: usize = 16;
/// Prefix of the hashed entry of a long name (and of its sidecar).
pub const LONG_PREFIX: &str = ".ezfs-long.";
/// Suffix of the sidecar that holds a long name's encoded name.
pub const SIDECAR_SUFFIX: &str = ".name";
/// Longest encoded name stored as itself (NAME_MAX of ext4, XFS, btrfs, tmpfs).
pub const MAX_STORED: usize = 255;
/// Longest name ezfs accepts (NAME_MAX): 255 bytes.
pub const MAX_NAME: usize = 255;
/// Associated-data domain of names.
const NAME_DOMAIN: &[u8] = b"ezfs-name";
/// Associated-data domain of symlink targets.
const TARGET_DOMAIN: &[u8] = b"ezfs-link";
/// Length of a symlink target's nonce.
const TARGET_NONCE_LEN: usize = 16;

/// Why a backing entry or target is no encrypted name of this directory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Not base64url of something sealed: no name this zone wrote.
    #[error("not an encrypted name")]
    Encoding,
    /// Sealed with another key or directory, or changed.
    #[error("does not authenticate (changed, or from another directory or zone)")]
    Auth,
    /// Authentic, yet no valid name: bad padding, or a '/' or NUL in it.
    #[error("decrypts to no valid name")]
    Invalid,
}

/// The associated data that binds a secret to its zone, key and version, for
/// wrapping a zone's name secret like a DEK.
pub fn secret_aad(zone_id: &[u8; 16], key: &str, version: u32) -> Vec<u8> {
    let mut a = b"ezfs-names\0".to_vec();
    a.extend_from_slice(zone_id);
    a.extend_from_slice(&version.to_le_bytes());
    a.extend_from_slice(key.as_bytes());
    a
}

/// The encoded name of `name` in the directory whose diriv is `diriv`.
pub fn encrypt_name(c: &NameCipher, diriv: &[u8; DIRIV_LEN], name: &[u8]) -> String {
    let pad = 16 - name.len() % 16;
    let mut padded = Vec::with_capacity(name.len() + pad);
    padded.extend_from_slice(name);
    padded.resize(name.len() + pad, pad as u8);
    URL_SAFE_NO_PAD.encode(c.seal(&[NAME_DOMAIN, diriv], &padded))
}

/// The name an encoded name stands for in the directory whose diriv is `diriv`.
pub fn decrypt_name(c: &NameCipher, diriv: &[u8; DIRIV_LEN], encoded: &[u8]) -> Result<Vec<u8>, NameError> {
    let sealed = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| NameError::Encoding)?;
    if sealed.len() < SIV_TAG_LEN + 16 || (sealed.len() - SIV_TAG_LEN) % 16 != 0 {
        return Err(NameError::Encoding);
    }
    let mut name = c
        .open(&[NAME_DOMAIN, diriv], &sealed)
        .map_err(|_| NameError::Auth)?;
    let pad = *name.last().ok_or(NameError::Invalid)? as usize;
    if !(1..=16).contains(&pad)
        || name.len() <= pad
        || !name[name.len() - pad..].iter().all(|&b| b as usize == pad)
    {
        return Err(NameError::Invalid);
    }
    name.truncate(name.len() - pad);
    if name.contains(&b'/') || name.contains(&0) || name == b"." || name == b".." {
        return Err(NameError::Invalid);
    }
    Ok(name)
}

/// How an encoded name is stored in its directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// As itself.
    Short(String),
    /// Too long: as `entry` (the hashed name), with `encoded` in its sidecar.
    Long {
        /// The directory entry: [`LONG_PREFIX`] and the hash of `encoded`.
        entry: String,
        /// The whole encoded name, the sidecar's content.
        encoded: String,
    },
}

impl Stored {
    /// The directory entry.
    pub fn entry(&self) -> &str {
        match self {
            Stored::Short(e) | Stored::Long { entry: e, .. } => e,
        }
    }
}

/// How `encoded` is stored: as itself when short enough, else hashed.
pub fn stored(encoded: String) -> Stored {
    if encoded.len() <= MAX_STORED {
        return Stored::Short(encoded);
    }
    Stored::Long {
        entry: long_entry(&encoded),
        encoded,
    }
}

/// The hashed entry of a long encoded name.
pub fn long_entry(encoded: &str) -> String {
    format!(
        "{LONG_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(encoded.as_bytes()))
    )
}

/// Whether a backing entry is the hashed entry of a long name (not its sidecar).
pub fn is_long_entry(name: &[u8]) -> bool {
    name.starts_with(LONG_PREFIX.as_bytes()) && !name.ends_with(SIDECAR_SUFFIX.as_bytes())
}

/// The sidecar file of a long name's hashed entry.
pub fn sidecar(entry: &str) -> String {
    format!("{entry}{SIDECAR_SUFFIX}")
}

/// A symlink target as stored: a fresh nonce, so equal targets look different.
pub fn encrypt_target(c: &NameCipher, target: &[u8]) -> String {
    encrypt_target_with(c, &crate::crypto::random_bytes(), target)
}

fn encrypt_target_with(c: &NameCipher, nonce: &[u8; TARGET_NONCE_LEN], target: &[u8]) -> String {
    let mut out = nonce.to_vec();
    out.extend_from_slice(&c.seal(&[TARGET_DOMAIN, nonce], target));
    URL_SAFE_NO_PAD.encode(out)
}

/// The target a stored symlink target stands for.
pub fn decrypt_target(c: &NameCipher, stored: &[u8]) -> Result<Vec<u8>, NameError> {
    let raw = URL_SAFE_NO_PAD.decode(stored).map_err(|_| NameError::Encoding)?;
    if raw.len() < TARGET_NONCE_LEN + SIV_TAG_LEN {
        return Err(NameError::Encoding);
    }
    let (nonce, sealed) = raw.split_at(TARGET_NONCE_LEN);
    c.open(&[TARGET_DOMAIN, nonce], sealed)
        .map_err(|_| NameError::Auth)
}

/// The plaintext length of a stored target of `stored_len` bytes (what `lstat`
/// shows), computed without decrypting.
pub fn target_len(stored_len: u64) -> u64 {
    (stored_len * 3 / 4).saturating_sub((TARGET_NONCE_LEN + SIV_TAG_LEN) as u64)
}

/// The longest target that fits PATH_MAX once stored.
pub const MAX_TARGET: usize = (4095 * 3 / 4) - TARGET_NONCE_LEN - SIV_TAG_LEN;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Key;

    fn cipher() -> NameCipher {
        NameCipher::derive(&Key::from_slice(&[0x42; 32]).unwrap(), &[0x24; 16])
    }

    /// Pins the format: secret 0x42 x32, zone id 0x24 x16, diriv 0x11 x16.
    #[test]
    fn known_answer_vectors() {
        let c = cipher();
        let diriv = [0x11; 16];
        assert_eq!(encrypt_name(&c, &diriv, b"a"), KAT_NAME_A);
        assert_eq!(encrypt_name(&c, &diriv, b"0123456789abcdef"), KAT_NAME_16);
        assert_eq!(encrypt_target_with(&c, &[0x33; 16], b"../target"), KAT_TARGET);
        assert_eq!(decrypt_target(&c, KAT_TARGET.as_bytes()).unwrap(), b"../target");
        assert_eq!(long_entry("x"), KAT_LONG_X);
    }

    // checked against an independent implementation (Python's `cryptography`:
    // HKDF and AESSIV) when they were made
    const KAT_NAME_A: &str = "E5FKNtRjXCrUzJgUpdd7qDNfXSCMkPj1_KRJKMHGqk0";
    const KAT_NAME_16: &str = "Wov0iC4BhA5AGimIalSiPD-c0tnG1AYnyishF4MLjJV_BGphxL4HhH_ArSDBi7u-";
    const KAT_TARGET: &str = "MzMzMzMzMzMzMzMzMzMzM3qBzXWQkKZm17kUVA-WKqyOls06WiP9Jdo";
    const KAT_LONG_X: &str = ".ezfs-long.LXEWQrcmsEQBYnyp-6wy9chTD7GQPMTbAiWHF5IaSIE";

    #[test]
    fn names_round_trip_in_their_directory_only() {
        let c = cipher();
        let (d1, d2) = ([1; 16], [2; 16]);
        for len in [1usize, 15, 16, 17, 100, 159, 160, 255] {
            let name: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            let e = encrypt_name(&c, &d1, &name);
            assert!(!e.starts_with('.'));
            assert_eq!(decrypt_name(&c, &d1, e.as_bytes()).unwrap(), name);
            assert_eq!(decrypt_name(&c, &d2, e.as_bytes()), Err(NameError::Auth));
            let short = matches!(stored(e.clone()), Stored::Short(_));
            assert_eq!(short, len < 160, "{len}: {}", e.len());
        }
        assert_eq!(decrypt_name(&c, &d1, b"plain.txt"), Err(NameError::Encoding));
        assert_eq!(decrypt_name(&c, &d1, b"AAAA"), Err(NameError::Encoding));
    }

    #[test]
    fn long_names_hash_to_one_entry_with_a_sidecar() {
        let enc = "A".repeat(400);
        let Stored::Long { entry, encoded } = stored(enc.clone()) else {
            panic!()
        };
        assert_eq!(encoded, enc);
        assert!(entry.len() < 64 && is_long_entry(entry.as_bytes()));
        assert!(!is_long_entry(sidecar(&entry).as_bytes()));
        assert_eq!(entry, long_entry(&enc));
    }

    #[test]
    fn targets_differ_each_time_and_authenticate() {
        let c = cipher();
        let (a, b) = (
            encrypt_target(&c, b"/etc/passwd"),
            encrypt_target(&c, b"/etc/passwd"),
        );
        assert_ne!(a, b);
        assert_eq!(decrypt_target(&c, a.as_bytes()).unwrap(), b"/etc/passwd");
        assert_eq!(target_len(a.len() as u64), 11);
        let mut bad = a.into_bytes();
        bad[30] = if bad[30] == b'A' { b'B' } else { b'A' };
        assert!(decrypt_target(&c, &bad).is_err());
        let long = vec![b'x'; MAX_TARGET];
        assert!(encrypt_target(&c, &long).len() <= 4095);
        assert_eq!(
            target_len(encrypt_target(&c, &long).len() as u64),
            MAX_TARGET as u64
        );
    }
}
