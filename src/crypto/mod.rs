//! AES-256-GCM primitives shared by the block codec, the header and the keystore.
//!
//! Everything that touches key bytes lives here, so the rest of the crate handles
//! keys only as opaque [`Key`] values that zeroize themselves on drop and never print.

pub mod backend;
pub mod names;
mod rng;
pub mod secret;

use secret::{scrub_stack, Secret};
use std::fmt;

/// Length of a nonce (96 bits, as GCM wants).
pub const NONCE_LEN: usize = 12;
/// Length of a GCM tag.
pub const TAG_LEN: usize = 16;
/// Length of every key ezfs uses (AES-256).
pub const KEY_LEN: usize = 32;

/// A 256-bit secret key, in secret memory (out of core dumps, zeroed when dropped);
/// `Debug` prints nothing of the key.
pub struct Key(Secret<[u8; KEY_LEN]>);

impl Key {
    /// A fresh key from the operating system's CSPRNG, generated in place.
    pub fn random() -> Key {
        let mut k = Key::zeroed();
        getrandom::fill(&mut *k.0).expect("the OS random generator failed");
        k
    }

    fn zeroed() -> Key {
        Key(Secret::new([0u8; KEY_LEN]))
    }

    /// A key with a copy of `bytes` (a slice of exactly [`KEY_LEN`] bytes, which the
    /// caller zeroizes); `None` for another length.
    pub fn from_slice(bytes: &[u8]) -> Option<Key> {
        (bytes.len() == KEY_LEN).then(|| {
            let mut k = Key::zeroed();
            k.0.copy_from_slice(bytes);
            k
        })
    }

    /// The raw bytes, for wrapping and for building a cipher. Never log these.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// A ready cipher for this key (the AES key schedule is computed once, in secret
    /// memory; the stack it was built on is overwritten).
    pub fn cipher(&self) -> Cipher {
        let c = Cipher(backend::Gcm::new(&self.0));
        scrub_stack();
        c
    }
}

impl Clone for Key {
    fn clone(&self) -> Key {
        let mut k = Key::zeroed();
        k.0.copy_from_slice(&*self.0);
        k
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        *self.0 == *other.0
    }
}

impl Eq for Key {}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

/// Authentication failed: the data, its tag, its nonce or its associated data changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthError;

/// An expanded AES-256-GCM key. Zeroizes its key schedule on drop.
pub struct Cipher(backend::Gcm);

impl fmt::Debug for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cipher(<redacted>)")
    }
}

impl Cipher {
    /// Encrypts `buf` in place under a fresh random nonce; returns (nonce, tag).
    pub fn seal(&self, aad: &[u8], buf: &mut [u8]) -> ([u8; NONCE_LEN], [u8; TAG_LEN]) {
        let nonce = random_nonce();
        let tag = self.seal_with_nonce(&nonce, aad, buf);
        (nonce, tag)
    }

    /// Encrypts `buf` in place under the given nonce. Only for known-answer tests and
    /// for callers that generated the nonce with [`random_nonce`].
    pub fn seal_with_nonce(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        self.0.seal(nonce, aad, buf)
    }

    /// Decrypts `buf` in place; on failure `buf` holds garbage and must not be used.
    pub fn open(
        &self,
        nonce: &[u8; NONCE_LEN],
        tag: &[u8; TAG_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<(), AuthError> {
        self.0.open(nonce, tag, aad, buf)
    }

    /// Wraps (encrypts) a key: returns nonce || ciphertext || tag. The key is copied
    /// to the output and encrypted there, in place.
    pub fn wrap_key(&self, aad: &[u8], key: &Key) -> [u8; WRAPPED_KEY_LEN] {
        let mut out = [0u8; WRAPPED_KEY_LEN];
        out[NONCE_LEN..NONCE_LEN + KEY_LEN].copy_from_slice(key.expose());
        let (nonce, tag) = self.seal(aad, &mut out[NONCE_LEN..NONCE_LEN + KEY_LEN]);
        out[..NONCE_LEN].copy_from_slice(&nonce);
        out[NONCE_LEN + KEY_LEN..].copy_from_slice(&tag);
        out
    }

    /// Unwraps a key made by [`Cipher::wrap_key`] with the same associated data. The
    /// key is decrypted in place in secret memory.
    /// A `wrapped` of any other length than [`WRAPPED_KEY_LEN`] fails.
    pub fn unwrap_key(&self, aad: &[u8], wrapped: &[u8]) -> Result<Key, AuthError> {
        if wrapped.len() != WRAPPED_KEY_LEN {
            return Err(AuthError);
        }
        let nonce: [u8; NONCE_LEN] = wrapped[..NONCE_LEN].try_into().expect("length");
        let tag: [u8; TAG_LEN] = wrapped[NONCE_LEN + KEY_LEN..].try_into().expect("length");
        let mut k = Key::zeroed();
        k.0.copy_from_slice(&wrapped[NONCE_LEN..NONCE_LEN + KEY_LEN]);
        // a failed open leaves garbage in the slot, zeroed when `k` drops
        self.open(&nonce, &tag, aad, &mut *k.0)?;
        Ok(k)
    }

    /// A MAC over `data` (GMAC under a random nonce): returns nonce || tag.
    pub fn mac(&self, data: &[u8]) -> [u8; NONCE_LEN + TAG_LEN] {
        let (nonce, tag) = self.seal(data, &mut []);
        let mut out = [0u8; NONCE_LEN + TAG_LEN];
        out[..NONCE_LEN].copy_from_slice(&nonce);
        out[NONCE_LEN..].copy_from_slice(&tag);
        out
    }

    /// Checks a MAC made by [`Cipher::mac`].
    pub fn verify_mac(&self, data: &[u8], mac: &[u8; NONCE_LEN + TAG_LEN]) -> Result<(), AuthError> {
        let nonce: [u8; NONCE_LEN] = mac[..NONCE_LEN].try_into().expect("length");
        let tag: [u8; TAG_LEN] = mac[NONCE_LEN..].try_into().expect("length");
        self.open(&nonce, &tag, data, &mut [])
    }
}

/// Length of a header MAC (HMAC-SHA-256).
pub const HEADER_MAC_LEN: usize = 32;

/// The MAC of a KMS-wrapped file's header (format version 2): HMAC-SHA-256 over `data`
/// under a key derived from the file's DEK with HKDF-SHA-256. A KMS's wrap may not
/// bind the header's fields (and pooled EDEKs are made before the file exists), so the
/// DEK itself authenticates them: only someone who can unwrap the EDEK can forge it.
pub fn header_mac(dek: &Key, data: &[u8]) -> [u8; HEADER_MAC_LEN] {
    use hmac::{KeyInit, Mac};
    let mut mac_key = zeroize::Zeroizing::new([0u8; 32]);
    hkdf::Hkdf::<sha2::Sha256>::new(None, dek.expose())
        .expand(b"ezfs header v2 mac", &mut mac_key[..])
        .expect("32 bytes is a valid HKDF-SHA-256 output length");
    let mut m = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&mac_key[..]).expect("any key length");
    m.update(data);
    m.finalize().into_bytes().into()
}

/// Checks a [`header_mac`] in constant time.
pub fn verify_header_mac(dek: &Key, data: &[u8], mac: &[u8; HEADER_MAC_LEN]) -> Result<(), AuthError> {
    let want = header_mac(dek, data);
    let diff = want.iter().zip(mac).fold(0u8, |d, (a, b)| d | (a ^ b));
    if diff == 0 {
        Ok(())
    } else {
        Err(AuthError)
    }
}

/// Length of a wrapped key: nonce, ciphertext, tag.
pub const WRAPPED_KEY_LEN: usize = NONCE_LEN + KEY_LEN + TAG_LEN;

/// A fresh 96-bit nonce from the thread-local CSPRNG (ChaCha seeded and periodically
/// reseeded from the OS, and again after a fork), so the hot path makes no syscall per
/// nonce.
pub fn random_nonce() -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    rng::fill(&mut n);
    n
}

/// Random bytes for identifiers (file ids, zone ids, salts).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rng::fill(&mut b);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_tamper() {
        let c = Key::random().cipher();
        let mut buf = *b"hello block";
        let (n, t) = c.seal(b"aad", &mut buf);
        assert_ne!(&buf, b"hello block");
        let mut ok = buf;
        c.open(&n, &t, b"aad", &mut ok).unwrap();
        assert_eq!(&ok, b"hello block");
        let mut bad = buf;
        assert_eq!(c.open(&n, &t, b"aaD", &mut bad), Err(AuthError));
        let mut bad = buf;
        bad[0] ^= 1;
        assert_eq!(c.open(&n, &t, b"aad", &mut bad), Err(AuthError));
    }

    #[test]
    fn wrap_unwrap_binds_aad() {
        let kek = Key::random().cipher();
        let dek = Key::random();
        let w = kek.wrap_key(b"ctx", &dek);
        assert_eq!(kek.unwrap_key(b"ctx", &w).unwrap(), dek);
        assert!(kek.unwrap_key(b"other", &w).is_err());
        let mut w2 = w;
        w2[20] ^= 0x80;
        assert!(kek.unwrap_key(b"ctx", &w2).is_err());
    }

    #[test]
    fn mac_detects_changes() {
        let c = Key::random().cipher();
        let m = c.mac(b"zone marker");
        c.verify_mac(b"zone marker", &m).unwrap();
        assert!(c.verify_mac(b"zone markeR", &m).is_err());
    }

    #[test]
    fn debug_never_prints_key_bytes() {
        let k = Key::from_slice(&[0xAB; 32]).unwrap();
        let s = format!("{k:?} {:?}", k.cipher());
        assert!(!s.to_lowercase().contains("ab"), "{s}");
    }

    #[test]
    fn nonces_differ() {
        assert_ne!(random_nonce(), random_nonce());
    }
}
