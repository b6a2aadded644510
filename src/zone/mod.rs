//! Encryption zones: the marker that makes a directory a zone, and the rules that
//! keep data from crossing a zone boundary without being re-encrypted.

pub mod marker;
pub mod usage;
pub mod walk;

pub use marker::{MarkerError, ZoneMarker, MARKER_FILE};

use std::fmt;

/// A zone as the filesystem sees it: which key its files use. `broken` holds why the
/// zone cannot be used (its marker failed authentication): files in it give EIO rather
/// than being treated as plaintext.
#[derive(Clone, PartialEq, Eq)]
pub struct Zone {
    pub id: [u8; 16],
    pub key: String,
    pub broken: Option<String>,
}

impl fmt::Debug for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Zone({}, key {})",
            crate::format::header::hex(&self.id),
            self.key
        )
    }
}

/// The zone context of a directory entry: `None` outside zones.
pub type ZoneId = Option<[u8; 16]>;

/// Why an operation crosses a zone boundary (reported as EXDEV).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrossesZones;

/// Rename (or exchange) moves an entry from a directory whose zone context is `from`
/// to one whose context is `to`. Inside one context nothing changes for the entry's
/// data, nested zone roots included (they keep their own key). Across contexts the
/// data would have to be re-encrypted, so the kernel gets EXDEV and `mv` copies.
pub fn check_rename(from: ZoneId, to: ZoneId) -> Result<(), CrossesZones> {
    if from == to {
        Ok(())
    } else {
        Err(CrossesZones)
    }
}

/// A hard link gives a file in zone context `file` a name in a directory of context
/// `dir`; across zones the same bytes would need two keys, so it is refused.
pub fn check_link(file: ZoneId, dir: ZoneId) -> Result<(), CrossesZones> {
    check_rename(file, dir)
}

/// Prefix of the temporary files of `zone reencrypt --data` (hidden like the marker).
pub const REKEY_TEMP_PREFIX: &str = ".ezfs-rekey.";

/// Whether `name` is a temporary file of `zone reencrypt --data` (not a zone file:
/// the next run removes it).
pub fn is_rekey_temp(name: &[u8]) -> bool {
    name.starts_with(REKEY_TEMP_PREFIX.as_bytes())
}

/// Names that the mount never shows and never lets anyone create.
pub fn is_reserved(name: &[u8], in_root: bool) -> bool {
    name == MARKER_FILE.as_bytes()
        || name.starts_with(REKEY_TEMP_PREFIX.as_bytes())
        || (in_root && name == crate::EZFS_DIR.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries() {
        let (a, b) = (Some([1u8; 16]), Some([2u8; 16]));
        assert!(check_rename(a, a).is_ok());
        assert!(check_rename(None, None).is_ok());
        assert_eq!(check_rename(a, b), Err(CrossesZones));
        assert_eq!(check_rename(a, None), Err(CrossesZones));
        assert_eq!(check_rename(None, b), Err(CrossesZones));
        assert_eq!(check_link(a, None), Err(CrossesZones));
    }

    #[test]
    fn reserved_names() {
        assert!(is_reserved(b".ezfs-zone", false));
        assert!(is_reserved(b".ezfs", true));
        assert!(!is_reserved(b".ezfs", false));
        assert!(!is_reserved(b"file", true));
        assert!(is_reserved(b".ezfs-rekey.00ff", false));
    }
}
