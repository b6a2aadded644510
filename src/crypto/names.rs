//! The cipher of encrypted file names: AES-SIV (RFC 5297, AES-256-CMAC-SIV),
//! deterministic and authenticated, so that a lookup encrypts a name once and finds
//! its backing entry, while a changed, swapped or moved name fails to open.
//!
//! Its 512-bit key is derived with HKDF-SHA-256 from a zone's random 256-bit *name
//! secret* (wrapped by the zone key like a file's DEK) and the zone id, under an
//! `info` of its own, so no data key and no other zone's names share it.

use super::secret::{scrub_stack, Secret};
use super::Key;
use aes_siv::aead::array::Array;
use aes_siv::aead::KeyInit;
use aes_siv::siv::Aes256Siv;
use parking_lot::Mutex;

/// HKDF `info` of the name key (version 1 of the construction).
pub const NAME_KEY_INFO: &[u8] = b"ezfs name key v1";
/// Length of an AES-SIV tag (the synthetic IV that leads every ciphertext).
pub const SIV_TAG_LEN: usize = 16;

/// A sealed value did not authenticate under this key and associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("does not authenticate")]
pub struct NameAuthError;

/// The AES-SIV state of one zone's names, in secret memory. SIV needs `&mut` for
/// each call (its CMAC state), hence the lock; a call takes about a microsecond.
pub struct NameCipher(Secret<Mutex<Aes256Siv>>);

impl NameCipher {
    /// The cipher of the zone `zone_id` whose name secret is `secret`:
    /// `HKDF-SHA-256(salt = zone_id, ikm = secret, info = NAME_KEY_INFO)`, 64 bytes.
    pub fn derive(secret: &Key, zone_id: &[u8; 16]) -> NameCipher {
        let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(zone_id), secret.expose());
        let mut key = Secret::new(Array::<u8, _>::default());
        hk.expand(NAME_KEY_INFO, &mut key)
            .expect("64 bytes is a valid HKDF-SHA-256 length");
        let c = NameCipher(Secret::new(Mutex::new(Aes256Siv::new(&key))));
        drop(key);
        scrub_stack();
        c
    }

    /// `tag || ciphertext` of `plain` under the associated-data strings `ad`.
    pub fn seal(&self, ad: &[&[u8]], plain: &[u8]) -> Vec<u8> {
        self.0
            .lock()
            .encrypt(ad, plain)
            .expect("AES-SIV takes any length")
    }

    /// The plaintext of `sealed` (as [`NameCipher::seal`] made it) under `ad`.
    pub fn open(&self, ad: &[&[u8]], sealed: &[u8]) -> Result<Vec<u8>, NameAuthError> {
        if sealed.len() < SIV_TAG_LEN {
            return Err(NameAuthError);
        }
        self.0.lock().decrypt(ad, sealed).map_err(|_| NameAuthError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 5297's test vector A.1 pins the mode itself (there with AES-128, the same
    /// construction); ezfs's own vectors with its key size are in `format::names`.
    #[test]
    fn rfc5297_vector() {
        use aes_siv::siv::Aes128Siv;
        let key: [u8; 32] = std::array::from_fn(|i| {
            if i < 16 {
                0xff - i as u8
            } else {
                0xf0 + (i - 16) as u8
            }
        });
        let ad: Vec<u8> = (0x10..0x28).collect();
        let plain: Vec<u8> = (1u8..=14).map(|k| k * 0x11).collect();
        let out = Aes128Siv::new(&Array::from(key)).encrypt([&ad], &plain).unwrap();
        assert_eq!(
            crate::text::hex(&out),
            "85632d07c6e8f37f950acd320a2ecc9340c02b9690c4dc04daef7f6afe5c"
        );
    }

    #[test]
    fn deterministic_bound_to_its_data_and_key() {
        let c = NameCipher::derive(&Key::from_slice(&[7; 32]).unwrap(), &[1; 16]);
        let a = c.seal(&[b"dir-a"], b"report.pdf");
        assert_eq!(a, c.seal(&[b"dir-a"], b"report.pdf"), "a lookup finds the entry");
        assert_ne!(a, c.seal(&[b"dir-b"], b"report.pdf"), "each directory its own");
        assert_eq!(c.open(&[b"dir-a"], &a).unwrap(), b"report.pdf");
        assert_eq!(c.open(&[b"dir-b"], &a), Err(NameAuthError), "moved elsewhere");
        let mut bad = a.clone();
        bad[20] ^= 1;
        assert_eq!(c.open(&[b"dir-a"], &bad), Err(NameAuthError), "tampered");
        let other_zone = NameCipher::derive(&Key::from_slice(&[7; 32]).unwrap(), &[2; 16]);
        assert_eq!(other_zone.open(&[b"dir-a"], &a), Err(NameAuthError));
        assert_eq!(c.open(&[], &a[..10]), Err(NameAuthError));
    }
}
