//! The header at the start of every encrypted file.
//!
//! Version 1, for a zone key the keystore (or an `exec:` provider) holds:
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
//! makes unwrapping fail; non-zero padding is refused as well.
//!
//! Version 2, for a zone key a KMS holds (KMIP): the KMS's ciphertext has its own
//! length, and the header names the KMS's id of the key version. Bytes 0..53+N are as
//! in version 1 (with version 2), then:
//! ```text
//!   53+N    1  key id length I (1..=255)
//!   54+N    I  the KMS's unique identifier of name@version, UTF-8
//! 54+N+I    2  EDEK length E (1..=1024), little endian
//! 56+N+I    E  EDEK: the KMS's ciphertext of the DEK (opaque here)
//! 56+N+I+E 32  MAC: HMAC-SHA-256 over bytes [0, 56+N+I+E) under
//!              HKDF-SHA-256(DEK, info "ezfs header v2 mac")
//!         ...  zeros up to 4096
//! ```
//! The EDEKs of a KMS zone are made ahead of time (a pool), before the file id exists,
//! so the KMS cannot bind the fields; the MAC under the unwrapped DEK does, whatever
//! the KMS's wrap mode. Either header is under 2 KiB, so rewriting it (re-wrapping the
//! EDEK) is one write within the first page.

use super::layout::HEADER_LEN;
use crate::crypto::{header_mac, verify_header_mac, Key, HEADER_MAC_LEN};
use crate::text::hex;
use std::fmt;

/// Magic bytes at the start of every encrypted backing file.
pub const MAGIC: &[u8; 8] = b"EZFSENC\0";
/// The header version of files whose DEK the zone key wraps locally.
pub const FORMAT_VERSION: u16 = 1;
/// The header version of files whose DEK a KMS wraps.
pub const FORMAT_VERSION_KMS: u16 = 2;
/// AES-256-GCM, 4 KiB blocks, nonces and tags gathered per 128 blocks.
pub const SUITE_AES256GCM_4K: u16 = 1;
/// Human name of [`SUITE_AES256GCM_4K`].
pub const SUITE_NAME: &str = "AES-256-GCM/4KiB";
/// The longest KMS ciphertext of a DEK a version 2 header holds.
pub const MAX_KMS_EDEK: usize = 1024;

const FIXED_LEN: usize = 53;

/// Why a header could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The file does not start with [`MAGIC`].
    #[error("not an ezfs encrypted file (bad magic)")]
    BadMagic,
    /// The format version field is not one this build reads.
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
    /// A length or name is out of range, the padding is not zeros, or the MAC fails.
    #[error("header authentication failed")]
    AuthFailed,
}

/// How a KMS wrapped a version 2 file's DEK.
#[derive(Clone, PartialEq, Eq)]
pub struct KmsWrap {
    /// The KMS's unique identifier of the zone key's version.
    pub key_id: String,
    /// The header MAC (see the module doc).
    pub mac: [u8; HEADER_MAC_LEN],
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
    /// The file's data key, wrapped by `key_name@key_version`: 60 bytes of AES-GCM in
    /// version 1, the KMS's ciphertext in version 2.
    pub edek: Vec<u8>,
    /// Version 2: the KMS's key id and the header MAC; `None` in version 1.
    pub kms: Option<KmsWrap>,
}

impl fmt::Debug for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Header")
            .field("file_id", &hex(&self.file_id))
            .field("key", &format_args!("{}@{}", self.key_name, self.key_version))
            .field("kms_key_id", &self.kms.as_ref().map(|k| &k.key_id))
            .finish_non_exhaustive()
    }
}

fn prefix(version: u16, file_id: &[u8; 16], zone_id: &[u8; 16], key_name: &str, key_version: u32) -> Vec<u8> {
    assert!(
        !key_name.is_empty() && key_name.len() <= 255,
        "key names are 1..=255 bytes"
    );
    let mut b = Vec::with_capacity(FIXED_LEN + key_name.len() + 128);
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&version.to_le_bytes());
    b.extend_from_slice(&SUITE_AES256GCM_4K.to_le_bytes());
    b.extend_from_slice(&(super::layout::BLOCK as u32).to_le_bytes());
    b.extend_from_slice(file_id);
    b.extend_from_slice(zone_id);
    b.extend_from_slice(&key_version.to_le_bytes());
    b.push(key_name.len() as u8);
    b.extend_from_slice(key_name.as_bytes());
    b
}

impl Header {
    /// The bytes a version 1 EDEK's wrap authenticates: every field before the EDEK.
    /// Build it before wrapping a new DEK, and pass it to unwrap.
    pub fn aad(file_id: &[u8; 16], zone_id: &[u8; 16], key_name: &str, key_version: u32) -> Vec<u8> {
        prefix(FORMAT_VERSION, file_id, zone_id, key_name, key_version)
    }

    /// This header's associated data (see [`Header::aad`]); version 1 only.
    pub fn own_aad(&self) -> Vec<u8> {
        Self::aad(&self.file_id, &self.zone_id, &self.key_name, self.key_version)
    }

    /// A version 2 header: `edek` is the KMS's ciphertext of `dek` under key version
    /// `key_id`; the MAC is computed with `dek`.
    pub fn kms(
        file_id: [u8; 16],
        zone_id: [u8; 16],
        key_name: String,
        key_version: u32,
        key_id: String,
        edek: Vec<u8>,
        dek: &Key,
    ) -> Header {
        assert!(
            (1..=255).contains(&key_id.len()) && (1..=MAX_KMS_EDEK).contains(&edek.len()),
            "KMS key ids are 1..=255 bytes and EDEKs 1..={MAX_KMS_EDEK}"
        );
        let mut h = Header {
            file_id,
            zone_id,
            key_name,
            key_version,
            edek,
            kms: Some(KmsWrap {
                key_id,
                mac: [0; HEADER_MAC_LEN],
            }),
        };
        let mac = header_mac(dek, &h.mac_input());
        h.kms.as_mut().expect("set above").mac = mac;
        h
    }

    /// The format version this header is written with.
    pub fn version(&self) -> u16 {
        match self.kms {
            None => FORMAT_VERSION,
            Some(_) => FORMAT_VERSION_KMS,
        }
    }

    /// Version 2: every byte the MAC covers. Version 1: the associated data plus EDEK.
    fn mac_input(&self) -> Vec<u8> {
        let mut b = prefix(
            self.version(),
            &self.file_id,
            &self.zone_id,
            &self.key_name,
            self.key_version,
        );
        if let Some(k) = &self.kms {
            b.push(k.key_id.len() as u8);
            b.extend_from_slice(k.key_id.as_bytes());
            b.extend_from_slice(&(self.edek.len() as u16).to_le_bytes());
        }
        b.extend_from_slice(&self.edek);
        b
    }

    /// Checks a version 2 header's MAC with the unwrapped `dek` (version 1 headers are
    /// authenticated by the unwrap itself).
    pub fn check_mac(&self, dek: &Key) -> Result<(), HeaderError> {
        match &self.kms {
            None => Ok(()),
            Some(k) => verify_header_mac(dek, &self.mac_input(), &k.mac).map_err(|_| HeaderError::AuthFailed),
        }
    }

    /// Length of the header's meaningful prefix (fields, EDEK and MAC; the rest is
    /// zeros): re-wrapping rewrites only these bytes.
    pub fn used_len(&self) -> usize {
        self.mac_input().len() + self.kms.as_ref().map_or(0, |_| HEADER_MAC_LEN)
    }

    /// The full 4096-byte header block (on the stack: one is written per new file).
    pub fn encode(&self) -> [u8; HEADER_LEN as usize] {
        let body = self.mac_input();
        let mut b = [0u8; HEADER_LEN as usize];
        b[..body.len()].copy_from_slice(&body);
        if let Some(k) = &self.kms {
            b[body.len()..body.len() + HEADER_MAC_LEN].copy_from_slice(&k.mac);
        }
        b
    }

    /// Parses a header block. Authentication happens when the EDEK is unwrapped
    /// (version 1) or the MAC is checked with the DEK (version 2, [`Header::check_mac`]);
    /// this checks structure, version, suite, lengths and padding.
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
        let bytes = &bytes[..HEADER_LEN as usize];
        let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().expect("4 bytes"));
        let version = u16_at(8);
        if version != FORMAT_VERSION && version != FORMAT_VERSION_KMS {
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
        if name_len == 0 {
            return Err(HeaderError::AuthFailed);
        }
        let text = |r: std::ops::Range<usize>| {
            std::str::from_utf8(&bytes[r])
                .map(str::to_owned)
                .map_err(|_| HeaderError::AuthFailed)
        };
        let key_name = text(FIXED_LEN..FIXED_LEN + name_len)?;
        let mut at = FIXED_LEN + name_len;
        let (edek, kms, end) = if version == FORMAT_VERSION {
            let end = at + crate::crypto::WRAPPED_KEY_LEN;
            (bytes[at..end].to_vec(), None, end)
        } else {
            let id_len = bytes[at] as usize;
            at += 1;
            if id_len == 0 {
                return Err(HeaderError::AuthFailed);
            }
            let key_id = text(at..at + id_len)?;
            at += id_len;
            let edek_len = u16_at(at) as usize;
            at += 2;
            if edek_len == 0 || edek_len > MAX_KMS_EDEK {
                return Err(HeaderError::AuthFailed);
            }
            let edek = bytes[at..at + edek_len].to_vec();
            at += edek_len;
            let mac = bytes[at..at + HEADER_MAC_LEN].try_into().expect("32 bytes");
            (edek, Some(KmsWrap { key_id, mac }), at + HEADER_MAC_LEN)
        };
        if bytes[end..].iter().any(|&b| b != 0) {
            return Err(HeaderError::AuthFailed);
        }
        Ok(Header {
            file_id: bytes[16..32].try_into().expect("16 bytes"),
            zone_id: bytes[32..48].try_into().expect("16 bytes"),
            key_version: u32_at(48),
            key_name,
            edek,
            kms,
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
            .wrap_key(&Header::aad(&file_id, &zone_id, "k1", 3), &dek)
            .to_vec();
        let h = Header {
            file_id,
            zone_id,
            key_name: "k1".into(),
            key_version: 3,
            edek,
            kms: None,
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

    fn kat_v2() -> (Header, Key) {
        let dek = Key::from_slice(&[0x11; 32]).unwrap();
        let h = Header::kms(
            *b"ezfs-kat-file-id",
            *b"ezfs-kat-zone-id",
            "k1".into(),
            3,
            "42".into(),
            b"opaque-kms-ciphertext".to_vec(),
            &dek,
        );
        (h, dek)
    }

    /// Version 2 pinned: the layout and the MAC (HKDF-SHA-256 then HMAC-SHA-256),
    /// computed independently of this code (Python's hmac/hashlib).
    #[test]
    fn known_bytes_v2() {
        let (h, dek) = kat_v2();
        let b = h.encode();
        assert_eq!(
            hex(&b[..81]),
            "455a4653454e43000200010000100000657a66732d6b61742d66696c652d6964657a66732d6b61742d7a6f6e652d6964\
             03000000026b3102343215006f70617175652d6b6d732d63697068657274657874"
        );
        assert_eq!(
            hex(&b[81..113]),
            "ae06343742657592813f9999eb557152728c34b47f3d3e8f859ee967c26754ab"
        );
        assert!(b[113..].iter().all(|&x| x == 0));
        assert_eq!(h.used_len(), 113);
        let back = Header::decode(&b).unwrap();
        assert_eq!(back, h);
        assert_eq!(back.version(), 2);
        back.check_mac(&dek).unwrap();
        assert_eq!(back.check_mac(&Key::random()), Err(HeaderError::AuthFailed));
    }

    #[test]
    fn every_changed_byte_of_a_v2_header_is_detected() {
        let (h, dek) = kat_v2();
        let bytes = h.encode();
        for i in 0..bytes.len() {
            let mut b = bytes;
            b[i] ^= 0x01;
            let ok = match Header::decode(&b) {
                Err(_) => false,
                // the EDEK is the KMS's to check: a changed EDEK byte fails there, and
                // the MAC covers it as well
                Ok(p) => p.check_mac(&dek).is_ok(),
            };
            assert!(!ok, "flip at byte {i} went unnoticed");
        }
    }

    #[test]
    fn v2_lengths_are_checked() {
        let (h, _) = kat_v2();
        let mut b = h.encode();
        b[58..60].copy_from_slice(&0u16.to_le_bytes());
        assert_eq!(Header::decode(&b), Err(HeaderError::AuthFailed), "empty EDEK");
        let mut b = h.encode();
        b[58..60].copy_from_slice(&2000u16.to_le_bytes());
        assert_eq!(Header::decode(&b), Err(HeaderError::AuthFailed), "EDEK too long");
        let mut b = h.encode();
        b[55] = 0;
        assert_eq!(Header::decode(&b), Err(HeaderError::AuthFailed), "empty key id");
        // the largest header of all still fits in the block
        let long = Header::kms(
            [1; 16],
            [2; 16],
            "k".repeat(255),
            1,
            "i".repeat(255),
            vec![7; MAX_KMS_EDEK],
            &Key::random(),
        );
        assert_eq!(Header::decode(&long.encode()).unwrap(), long);
    }
}
