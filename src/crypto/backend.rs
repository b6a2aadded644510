//! The AES-256-GCM implementations behind [`super::Cipher`]. Both produce the same
//! bytes (standard GCM); a test seals with one and opens with the other.
//!
//! - `ring` (the default feature): assembly AES-NI/CLMUL code, about 2.5x the
//!   throughput of the pure-Rust crate on this project's machines;
//! - `aes-gcm` (RustCrypto): always built, used when the `ring` feature is off and as
//!   the reference in tests.

use super::{AuthError, NONCE_LEN, TAG_LEN};

use super::secret::Secret;

/// RustCrypto's AES-256-GCM, its key schedule in secret memory (zeroized on drop).
pub struct RustCryptoGcm(Secret<aes_gcm::Aes256Gcm>);

impl RustCryptoGcm {
    /// The cipher of the 256-bit key `key`.
    pub fn new(key: &[u8; 32]) -> Self {
        use aes_gcm::KeyInit;
        RustCryptoGcm(Secret::new(aes_gcm::Aes256Gcm::new(key.into())))
    }

    /// Encrypts `buf` in place under `nonce`, authenticating `aad` too; returns the tag.
    pub fn seal(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        use aes_gcm::aead::AeadInOut;
        let tag = self
            .0
            .encrypt_inout_detached(&aes_gcm::Nonce::from(*nonce), aad, buf.into())
            .expect("AES-GCM input within limits");
        tag.into()
    }

    /// Decrypts `buf` in place if `tag` authenticates it with `aad`; on failure `buf` must not be used.
    pub fn open(
        &self,
        nonce: &[u8; NONCE_LEN],
        tag: &[u8; TAG_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<(), AuthError> {
        use aes_gcm::aead::AeadInOut;
        self.0
            .decrypt_inout_detached(
                &aes_gcm::Nonce::from(*nonce),
                aad,
                buf.into(),
                &aes_gcm::Tag::from(*tag),
            )
            .map_err(|_| AuthError)
    }
}

#[cfg(feature = "ring")]
pub use self::ring_gcm::RingGcm;

#[cfg(feature = "ring")]
mod ring_gcm {
    use super::{AuthError, Secret, NONCE_LEN, TAG_LEN};
    use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_256_GCM};

    /// ring's AES-256-GCM. ring does not wipe its keys; the expanded key (plain
    /// arrays, no heap) lives in secret memory, which is zeroed when it is dropped.
    pub struct RingGcm(Secret<LessSafeKey>);

    impl RingGcm {
        /// The cipher of the 256-bit key `key`.
        pub fn new(key: &[u8; 32]) -> Self {
            let k = UnboundKey::new(&AES_256_GCM, key).expect("32-byte key");
            RingGcm(Secret::new(LessSafeKey::new(k)))
        }

        /// Encrypts `buf` in place under `nonce`, authenticating `aad` too; returns the tag.
        pub fn seal(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
            let tag = self
                .0
                .seal_in_place_separate_tag(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), buf)
                .expect("AES-GCM input within limits");
            tag.as_ref().try_into().expect("16-byte tag")
        }

        /// Decrypts `buf` in place if `tag` authenticates it with `aad`; on failure `buf` must not be used.
        pub fn open(
            &self,
            nonce: &[u8; NONCE_LEN],
            tag: &[u8; TAG_LEN],
            aad: &[u8],
            buf: &mut [u8],
        ) -> Result<(), AuthError> {
            let tag = Tag::from(*tag);
            self.0
                .open_in_place_separate_tag(
                    Nonce::assume_unique_for_key(*nonce),
                    Aad::from(aad),
                    tag,
                    buf,
                    0..,
                )
                .map(drop)
                .map_err(|_| AuthError)
        }
    }
}

/// The implementation `Cipher` uses.
#[cfg(feature = "ring")]
pub type Gcm = RingGcm;
#[cfg(not(feature = "ring"))]
pub type Gcm = RustCryptoGcm;

#[cfg(all(test, feature = "ring"))]
mod tests {
    use super::*;

    #[test]
    fn backends_agree() {
        let key = [0x42u8; 32];
        let (a, b) = (RingGcm::new(&key), RustCryptoGcm::new(&key));
        for len in [0usize, 1, 15, 16, 17, 4095, 4096] {
            let nonce = [len as u8; NONCE_LEN];
            let plain: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let (mut x, mut y) = (plain.clone(), plain.clone());
            let (tx, ty) = (a.seal(&nonce, b"aad", &mut x), b.seal(&nonce, b"aad", &mut y));
            assert_eq!((&x, tx), (&y, ty), "len {len}");
            b.open(&nonce, &tx, b"aad", &mut x).unwrap();
            a.open(&nonce, &ty, b"aad", &mut y).unwrap();
            assert_eq!((&x, &y), (&plain, &plain));
            let mut z = plain.clone();
            let t = a.seal(&nonce, b"aad", &mut z);
            assert!(b.open(&nonce, &t, b"aaX", &mut z).is_err());
        }
    }
}
