//! The zone marker: a small file `.ezfs-zone` in a zone's root directory.
//!
//! A file (not an xattr) so that it survives `cp -a`, `tar` and `rsync` of the backing
//! tree, and moves with a rename of the zone root. Its content names the zone id and
//! key and is authenticated by the keystore's master key, so an edited marker (another
//! key name, say) is refused instead of silently used. It confirms the keystore's
//! registry, which decides (see [`super::decide`]).

use crate::backdir::resolve::{read_small, SmallFileError};
use crate::crypto::{Cipher, NONCE_LEN, TAG_LEN};
use crate::text::{hex, unhex};
use serde::{Deserialize, Serialize};
use std::ffi::OsStr;
use std::os::fd::BorrowedFd;

/// File name of the marker in a zone root (hidden from the mount, reserved there).
pub const MARKER_FILE: &str = ".ezfs-zone";
const MARKER_FORMAT: u32 = 1;

/// A zone's identity as recorded in its marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneMarker {
    /// The zone's random id.
    pub zone_id: [u8; 16],
    /// The name of the zone's key.
    pub key: String,
}

#[derive(Serialize, Deserialize)]
struct MarkerFile {
    format: u32,
    zone_id: String,
    key: String,
    mac: String,
}

/// Why a marker cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MarkerError {
    /// The marker is not JSON of the expected shape, or a field does not decode.
    #[error("zone marker is unreadable: {0}")]
    Malformed(String),
    /// The marker's format version is not this build's.
    #[error("unsupported zone marker format {0}")]
    UnsupportedFormat(u32),
    /// The marker's MAC verifies under none of the master keys given.
    #[error("zone marker failed authentication (edited, or from another keystore)")]
    AuthFailed,
}

fn mac_input(zone_id: &[u8; 16], key: &str) -> Vec<u8> {
    let mut a = b"ezfs-zone\0".to_vec();
    a.extend_from_slice(&MARKER_FORMAT.to_le_bytes());
    a.extend_from_slice(zone_id);
    a.extend_from_slice(key.as_bytes());
    a
}

/// Largest marker file read (a real one is under 200 bytes).
const MAX_MARKER: u64 = 4096;

/// What a directory's marker file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarkerRead {
    /// No entry named [`MARKER_FILE`].
    Absent,
    /// Something is there but it is no authentic marker: why.
    Invalid(String),
    /// An authentic marker.
    Valid(ZoneMarker),
}

/// Reads and authenticates the marker of the directory `dir`. Whatever a user may have
/// put under the marker's name (a symlink, a FIFO, a huge file) is refused without
/// being followed or waited on.
/// `keys` are the master keys a marker may carry a MAC of (two while the master key
/// is being rotated).
pub fn read_marker(dir: BorrowedFd<'_>, keys: &[&Cipher]) -> MarkerRead {
    match read_small(dir, OsStr::new(MARKER_FILE), MAX_MARKER) {
        Err(SmallFileError::Missing) => MarkerRead::Absent,
        Err(e) => MarkerRead::Invalid(format!("zone marker is unusable: {e}")),
        Ok(bytes) => {
            let mut last = MarkerError::AuthFailed;
            for k in keys {
                match ZoneMarker::decode(&bytes, k) {
                    Ok(m) => return MarkerRead::Valid(m),
                    Err(e) => last = e,
                }
            }
            MarkerRead::Invalid(last.to_string())
        }
    }
}

impl ZoneMarker {
    /// A new zone with a random id.
    pub fn new(key: &str) -> ZoneMarker {
        ZoneMarker {
            zone_id: crate::crypto::random_bytes(),
            key: key.to_owned(),
        }
    }

    /// Zone id as hex (how the keystore and the CLI name zones).
    pub fn id_hex(&self) -> String {
        hex(&self.zone_id)
    }

    /// The marker file's bytes, authenticated with `master`.
    pub fn encode(&self, master: &Cipher) -> Vec<u8> {
        let m = MarkerFile {
            format: MARKER_FORMAT,
            zone_id: hex(&self.zone_id),
            key: self.key.clone(),
            mac: hex(&master.mac(&mac_input(&self.zone_id, &self.key))),
        };
        let mut v = serde_json::to_vec(&m).expect("marker serializes");
        v.push(b'\n');
        v
    }

    /// Parses and authenticates a marker file.
    pub fn decode(bytes: &[u8], master: &Cipher) -> Result<ZoneMarker, MarkerError> {
        let m: MarkerFile =
            serde_json::from_slice(bytes).map_err(|e| MarkerError::Malformed(e.to_string()))?;
        if m.format != MARKER_FORMAT {
            return Err(MarkerError::UnsupportedFormat(m.format));
        }
        let zone_id = unhex::<16>(&m.zone_id).ok_or_else(|| MarkerError::Malformed("bad zone id".into()))?;
        let mac = unhex::<{ NONCE_LEN + TAG_LEN }>(&m.mac)
            .ok_or_else(|| MarkerError::Malformed("bad mac".into()))?;
        master
            .verify_mac(&mac_input(&zone_id, &m.key), &mac)
            .map_err(|_| MarkerError::AuthFailed)?;
        Ok(ZoneMarker { zone_id, key: m.key })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Key;

    #[test]
    fn round_trip_and_tamper() {
        let master = Key::random().cipher();
        let m = ZoneMarker::new("k1");
        let bytes = m.encode(&master);
        assert_eq!(ZoneMarker::decode(&bytes, &master).unwrap(), m);
        let edited = String::from_utf8(bytes.clone())
            .unwrap()
            .replace("\"k1\"", "\"k2\"");
        assert_eq!(
            ZoneMarker::decode(edited.as_bytes(), &master),
            Err(MarkerError::AuthFailed)
        );
        assert!(ZoneMarker::decode(&bytes, &Key::random().cipher()).is_err());
        assert!(matches!(
            ZoneMarker::decode(b"{", &master),
            Err(MarkerError::Malformed(_))
        ));
        assert!(matches!(
            ZoneMarker::decode(b"", &master),
            Err(MarkerError::Malformed(_))
        ));
    }
}
