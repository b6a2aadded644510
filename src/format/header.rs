//! The header at the start of every encrypted file.
//!
//! ```text
//! offset  len  field
//!      0    8  magic "EZFSENC\0"
//!      8    2  format version, little endian (1)
//!     10    2  cipher suite (1 = AES-256-GCM, 4 KiB blocks, 128-block groups)
//!     12    4  block size, little endian (4096)
//!     16   16  file id (random)
//!     32   16  zone id of the zone the file was created in
//!     48    4  zone-key version, little endian
//!     52    1  zone-key name length N (1..=255)
//!     53    N  zone-key name, UTF-8
//!   53+N   60  EDEK: nonce (12) || AES-256-GCM(DEK) (32) || tag (16)
//!              under the zone-key version, associated data = bytes [0, 53+N)
//!  113+N  ...  zeros up to 4096
//! ```
//! The wrap's associated data covers every other field, so a changed byte anywhere
//! makes unwrapping fail; non-zero padding is refused as well. The whole header is
//! under 512 bytes, so rewriting it (re-wrapping the EDEK) is one sector write.

use super::layout::HEADER_LEN;
use crate::crypto::WRAPPED_KEY_LEN;
use crate::text::hex;
use std::fmt;

/// Magic bytes at the start of every encrypted backing file.
pub const MAGIC: &[u8; 8] = b"EZFSENC\0";
/// The only format version this build reads and writes.
pub const FORMAT_VERSION: u16 = 1;
/// AES-256-GCM, 4 KiB blocks, nonces and tags gathered per 128 blocks.
pub const SUITE_AES256GCM_4K: u16 = 1;
/// Human name of [`SUITE_AES256GCM_4K`].
pub const SUITE_NAME: &str = "AES-256-GCM/4KiB";

const FIXED_LEN: usize = 53;

/// Why a header could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The file does not start with [`MAGIC`].
    #[error("not an ezfs encrypted file (bad magic)")]
    BadMagic,
    /// The format version field is not [`FORMAT_VERSION`].
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u16),
    /// The cipher suite field is not one this build knows.
    #[error("unsupported cipher suite {0}")]
    UnsupportedSuite(u16),
    /// The block size field is not the one the cipher suite has (4096).
    #[error("unsupported block size {0} (cipher suite 1 has 4096-byte blocks)")]
    UnsupportedBlockSize(u32),
    /// The file is shorter than a header.
    #[error("header is truncated")]
    Truncated,
    /// The key name is empty or not UTF-8, or the padding is not zeros.
    #[error("header authentication failed")]
    AuthFailed,
}

/// A parsed header: everything needed to find the zone key and unwrap the DEK.
#[derive(Clone, PartialEq, Eq)]
pub struct Header {
    /// The file's random id, bound into every block's associated data.
    pub file_id: [u8; 16],
    /// The id of the zone the file was created in.
    pub zone_id: [u8; 16],
    /// The name of the zone key that wraps the data key.
    pub key_name: String,
    /// The version of that key.
    pub key_version: u32,
    /// The file's data key, wrapped by `key_name@key_version`.
    pub edek: [u8; WRAPPED_KEY_LEN],
}

impl fmt::Debug for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Header")
            .field("file_id", &hex(&self.file_id))
            .field("key", &format_args!("{}@{}", self.key_name, self.key_version))
            .finish_non_exhaustive()
    }
}

impl Header {
    /// The bytes the EDEK's wrap authenticates: every field before the EDEK.
    /// Build it before wrapping a new DEK, and pass it to unwrap.
    pub fn aad(file_id: &[u8; 16], zone_id: &[u8; 16], key_name: &str, key_version: u32) -> Vec<u8> {
        assert!(
            !key_name.is_empty() && key_name.len() <= 255,
            "key names are 1..=255 bytes"
        );
        let mut b = Vec::with_capacity(FIXED_LEN + key_name.len());
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        b.extend_from_slice(&SUITE_AES256GCM_4K.to_le_bytes());
        b.extend_from_slice(&(super::layout::BLOCK as u32).to_le_bytes());
        b.extend_from_slice(file_id);
        b.extend_from_slice(zone_id);
        b.extend_from_slice(&key_version.to_le_bytes());
        b.push(key_name.len() as u8);
        b.extend_from_slice(key_name.as_bytes());
        b
    }

    /// This header's associated data (see [`Header::aad`]).
    pub fn own_aad(&self) -> Vec<u8> {
        Self::aad(&self.file_id, &self.zone_id, &self.key_name, self.key_version)
    }

    /// Length of the header's meaningful prefix (fields and EDEK; the rest is zeros):
    /// re-wrapping rewrites only these bytes, one sector.
    pub fn used_len(&self) -> usize {
        FIXED_LEN + self.key_name.len() + WRAPPED_KEY_LEN
    }

    /// The full 4096-byte header block (on the stack: one is written per new file).
    pub fn encode(&self) -> [u8; HEADER_LEN as usize] {
        let aad = self.own_aad();
        let mut b = [0u8; HEADER_LEN as usize];
        b[..aad.len()].copy_from_slice(&aad);
        b[aad.len()..aad.len() + self.edek.len()].copy_from_slice(&self.edek);
        b
    }

    /// Parses a header block. Authentication happens when the EDEK is unwrapped with
    /// [`Header::own_aad`]; this checks structure, version, suite and padding.
    pub fn decode(bytes: &[u8]) -> Result<Header, HeaderError> {
        if bytes.len() < MAGIC.len() {
            return Err(HeaderError::Truncated);
        }
        if &bytes[..8] != MAGIC {
            return Err(HeaderError::BadMagic);
        }
        if bytes.len() < HEADER_LEN as usize {
            return Err(HeaderError::Truncated);
        }
        let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().expect("4 bytes"));
        let version = u16_at(8);
        if version != FORMAT_VERSION {
            return Err(HeaderError::UnsupportedVersion(version));
        }
        let suite = u16_at(10);
        if suite != SUITE_AES256GCM_4K {
            return Err(HeaderError::UnsupportedSuite(suite));
        }
        let block_size = u32_at(12);
        if block_size != super::layout::BLOCK as u32 {
            return Err(HeaderError::UnsupportedBlockSize(block_size));
        }
        let name_len = bytes[52] as usize;
        let edek_at = FIXED_LEN + name_len;
        let end = edek_at + WRAPPED_KEY_LEN;
        if name_len == 0 || bytes[end..HEADER_LEN as usize].iter().any(|&b| b != 0) {
            return Err(HeaderError::AuthFailed);
        }
        let key_name = std::str::from_utf8(&bytes[FIXED_LEN..edek_at])
            .map_err(|_| HeaderError::AuthFailed)?
            .to_owned();
        Ok(Header {
            file_id: bytes[16..32].try_into().expect("16 bytes"),
            zone_id: bytes[32..48].try_into().expect("16 bytes"),
            key_version: u32_at(48),
            key_name,
            edek: bytes[edek_at..end].try_into().expect("60 bytes"),
        })
    }
}

/// Reads and parses the header of a non-empty encrypted backing file.
pub fn read_header(file: &std::fs::File) -> Result<Header, String> {
    let mut buf = vec![0u8; HEADER_LEN as usize];
    let n = super::Backing::read_at(file, &mut buf, 0).map_err(|e| e.to_string())?;
    Header::decode(&buf[..n]).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Key;

    fn sample() -> (Header, Key, Key) {
        let kek = Key::random();
        let dek = Key::random();
        let (file_id, zone_id) = ([1u8; 16], [2u8; 16]);
        let edek = kek
            .cipher()
            .wrap_key(&Header::aad(&file_id, &zone_id, "k1", 3), &dek);
        let h = Header {
            file_id,
            zone_id,
            key_name: "k1".into(),
            key_version: 3,
            edek,
        };
        (h, kek, dek)
    }

    #[test]
    fn round_trip() {
        let (h, kek, dek) = sample();
        let bytes = h.encode();
        assert_eq!(bytes.len(), 4096);
        let back = Header::decode(&bytes).unwrap();
        assert_eq!(back, h);
        assert_eq!(kek.cipher().unwrap_key(&back.own_aad(), &back.edek).unwrap(), dek);
    }

    #[test]
    fn every_changed_byte_is_detected() {
        let (h, kek, _) = sample();
        let bytes = h.encode();
        for i in 0..bytes.len() {
            let mut b = bytes;
            b[i] ^= 0x01;
            let ok = match Header::decode(&b) {
                Err(_) => false,
                Ok(p) => kek.cipher().unwrap_key(&p.own_aad(), &p.edek).is_ok(),
            };
            assert!(!ok, "flip at byte {i} went unnoticed");
        }
    }

    #[test]
    fn clear_errors() {
        let (h, _, _) = sample();
        let mut b = h.encode();
        b[8] = 9;
        assert_eq!(
            Header::decode(&b).unwrap_err().to_string(),
            "unsupported format version 9"
        );
        let mut b = h.encode();
        b[10] = 7;
        assert_eq!(Header::decode(&b), Err(HeaderError::UnsupportedSuite(7)));
        let mut b = h.encode();
        b[12..16].copy_from_slice(&512u32.to_le_bytes());
        assert_eq!(Header::decode(&b), Err(HeaderError::UnsupportedBlockSize(512)));
        assert_eq!(
            Header::decode(&b).unwrap_err().to_string(),
            "unsupported block size 512 (cipher suite 1 has 4096-byte blocks)"
        );
        let mut b = h.encode();
        b[h.used_len() + 7] = 1;
        assert_eq!(Header::decode(&b), Err(HeaderError::AuthFailed), "padding");
        assert_eq!(Header::decode(&h.encode()[..100]), Err(HeaderError::Truncated));
        assert_eq!(Header::decode(b"plain text file"), Err(HeaderError::BadMagic));
        assert_eq!(Header::decode(&[]), Err(HeaderError::Truncated));
    }

    #[test]
    fn known_bytes() {
        let (h, _, _) = sample();
        let b = h.encode();
        assert_eq!(&b[..16], b"EZFSENC\0\x01\x00\x01\x00\x00\x10\x00\x00");
        assert_eq!(&b[48..55], b"\x03\x00\x00\x00\x02k1");
    }
}
