//! Encryption zones: which directories are zones (the keystore's authenticated
//! registry decides; the marker file in a zone root confirms it and lets a copied
//! backing tree find its zones again), and the rules that keep data from crossing a
//! zone boundary without being re-encrypted.

pub mod marker;
pub mod names;
pub mod usage;
pub mod walk;

pub use marker::{MarkerError, MarkerRead, ZoneMarker, MARKER_FILE};

use crate::keys::keystore::{NameKeys, ZoneEntry};
use std::fmt;

/// A zone as the filesystem sees it: which key its files use. `broken` holds why the
/// zone cannot be used (marker missing, altered, or not in the registry): files in it
/// give EIO and nothing can be created in it, rather than anything being treated as
/// plaintext.
#[derive(Clone, PartialEq, Eq)]
pub struct Zone {
    /// The zone's random id (in its marker and every file header).
    pub id: [u8; 16],
    /// The name of the zone's key.
    pub key: String,
    /// Why the zone cannot be used; `None` for a usable zone.
    pub broken: Option<String>,
    /// A zone whose file names are encrypted: its wrapped name secrets as the registry
    /// held them when the zone was decided (a mount asks the registry for the live
    /// ones: a `--data` job changes them).
    pub names: Option<NameKeys>,
}

impl Zone {
    /// A usable zone.
    pub fn new(id: [u8; 16], key: &str) -> Zone {
        Zone {
            id,
            key: key.to_owned(),
            broken: None,
            names: None,
        }
    }

    /// A zone that cannot be used, and why.
    pub fn broken(id: [u8; 16], key: &str, why: impl Into<String>) -> Zone {
        Zone {
            broken: Some(why.into()),
            ..Zone::new(id, key)
        }
    }

    /// The same zone with the file-name mode its registry entry records.
    pub fn with_names(self, entry: &ZoneEntry) -> Zone {
        Zone {
            names: entry.names.clone(),
            ..self
        }
    }
}

/// Whether a directory is a zone root, and which zone, from its marker and the
/// registry. `here` is the registered zone whose root this directory is (id in hex and
/// entry), if any; `registered(id)` says whether the registry knows a zone id.
///
/// The registry is the authority: a registered root stays a zone whatever happened to
/// its marker (missing, altered, another zone's: broken, never plaintext), and a
/// marker the registry does not place here makes a broken zone too (a copy of another
/// zone's root, an old marker of a removed zone). Only a directory that is no
/// registered root and holds no marker is not a zone root.
pub fn decide(
    marker: MarkerRead,
    here: Option<(&str, &ZoneEntry)>,
    registered: impl Fn(&str) -> bool,
) -> Option<Zone> {
    if let Some((id_hex, entry)) = here {
        let id = crate::text::unhex::<16>(id_hex).unwrap_or([0xff; 16]);
        let zone = match marker {
            MarkerRead::Valid(m) if m.id_hex() == id_hex && m.key == entry.key => Zone::new(id, &entry.key),
            MarkerRead::Valid(m) => Zone::broken(
                id,
                &entry.key,
                format!(
                    "its zone marker names another zone ({}, key {})",
                    m.id_hex(),
                    m.key
                ),
            ),
            MarkerRead::Absent => Zone::broken(id, &entry.key, "its zone marker is missing"),
            MarkerRead::Invalid(why) => Zone::broken(id, &entry.key, why),
        };
        // a broken zone keeps its name mode: nothing may be created in it as plain
        return Some(zone.with_names(entry));
    }
    match marker {
        MarkerRead::Absent => None,
        MarkerRead::Invalid(why) => Some(Zone::broken(crate::crypto::random_bytes(), "", why)),
        MarkerRead::Valid(m) if registered(&m.id_hex()) => Some(Zone::broken(
            m.zone_id,
            &m.key,
            format!(
                "a copy of the marker of zone {}, whose root is elsewhere",
                m.id_hex()
            ),
        )),
        MarkerRead::Valid(m) => Some(Zone::broken(
            m.zone_id,
            &m.key,
            format!(
                "zone {} is not in the keystore's registry (removed, or from another keystore)",
                m.id_hex()
            ),
        )),
    }
}

impl fmt::Debug for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Zone({}, key {})", crate::text::hex(&self.id), self.key)
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

/// Files the filesystem keeps in the directories of zones, which are no zone files:
/// the marker, and in zones that encrypt names a diriv or a long name's sidecar.
pub fn is_housekeeping(name: &[u8]) -> bool {
    use crate::format::names::{is_long_entry, DIRIV_FILE, LONG_PREFIX};
    name == MARKER_FILE.as_bytes()
        || name == DIRIV_FILE.as_bytes()
        || (name.starts_with(LONG_PREFIX.as_bytes()) && !is_long_entry(name))
}

/// Names that the mount never shows and never lets anyone create.
pub fn is_reserved(name: &[u8], in_root: bool) -> bool {
    use crate::format::names::{DIRIV_FILE, LONG_PREFIX};
    name == MARKER_FILE.as_bytes()
        || name == DIRIV_FILE.as_bytes()
        || name.starts_with(LONG_PREFIX.as_bytes())
        || name.starts_with(REKEY_TEMP_PREFIX.as_bytes())
        || crate::backdir::resolve::is_temp(name)
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
        assert!(is_reserved(b".ezfs-tmp.00ff", false));
    }

    #[test]
    fn the_registry_decides_membership() {
        let entry = ZoneEntry {
            key: "k1".into(),
            path: "z".into(),
            names: None,
        };
        let m = ZoneMarker {
            zone_id: [7; 16],
            key: "k1".into(),
        };
        let id = m.id_hex();
        let here = Some((id.as_str(), &entry));
        let known = |i: &str| i == id;
        let ok = decide(MarkerRead::Valid(m.clone()), here, known).unwrap();
        assert_eq!((ok.id, ok.key.as_str(), ok.broken), ([7; 16], "k1", None));
        // a registered root without its marker, or with a bad or foreign one: broken
        for marker in [
            MarkerRead::Absent,
            MarkerRead::Invalid("edited".into()),
            MarkerRead::Valid(ZoneMarker {
                zone_id: [8; 16],
                key: "k1".into(),
            }),
            MarkerRead::Valid(ZoneMarker {
                zone_id: [7; 16],
                key: "k2".into(),
            }),
        ] {
            let z = decide(marker, here, known).expect("still a zone");
            assert!(z.broken.is_some());
            assert_eq!((z.id, z.key.as_str()), ([7; 16], "k1"), "the registry's zone");
        }
        // elsewhere: no marker is no zone; any marker is a broken zone
        assert!(decide(MarkerRead::Absent, None, known).is_none());
        for marker in [
            MarkerRead::Valid(m.clone()),
            MarkerRead::Valid(ZoneMarker {
                zone_id: [9; 16],
                key: "old".into(),
            }),
            MarkerRead::Invalid("not a regular file".into()),
        ] {
            assert!(decide(marker, None, known).unwrap().broken.is_some());
        }
    }
}
