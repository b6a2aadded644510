//! The zone registry: which directories are zones and with which key. The keystore,
//! not a marker planted in a directory, decides what is a zone; and a key a zone uses
//! cannot be deleted.

use super::model::{NameKeys, ZoneEntry};
use super::Keystore;
use crate::keys::KeyError;

impl Keystore {
    /// Records a new zone (or its new path after a rename: a known zone keeps its
    /// name secret).
    pub fn register_zone(&mut self, zone_id: &str, key: &str, path: &str) -> Result<(), KeyError> {
        self.update(|ks| {
            ks.current_version(key)?;
            place_zone(&mut ks.body.zones, zone_id, key, path);
            Ok(())
        })
    }

    /// Sets the name secret of zone `zone_id` (`None`: plain names).
    pub fn set_zone_names(&mut self, zone_id: &str, names: Option<NameKeys>) -> Result<(), KeyError> {
        self.update(|ks| {
            let zone = ks
                .body
                .zones
                .get_mut(zone_id)
                .ok_or_else(|| KeyError::Other(format!("no zone {zone_id} is registered")))?;
            zone.names = names.clone();
            Ok(())
        })
    }

    /// Records new paths of zones (a rename moved them): (id, key, path) each.
    pub fn move_zones(&mut self, moved: &[(String, String, String)]) -> Result<(), KeyError> {
        self.update(|ks| {
            for (id, key, path) in moved {
                place_zone(&mut ks.body.zones, id, key, path);
            }
            Ok(())
        })
    }

    /// Forgets a zone (its root was removed).
    pub fn unregister_zone(&mut self, zone_id: &str) -> Result<(), KeyError> {
        self.update(|ks| {
            ks.body.zones.remove(zone_id);
            Ok(())
        })
    }
}

/// Records zone `id` with key `key` at `path`; a zone already known keeps its name
/// secret (a rename does not change how its names are encrypted).
fn place_zone(zones: &mut std::collections::BTreeMap<String, ZoneEntry>, id: &str, key: &str, path: &str) {
    let names = zones.get(id).and_then(|z| z.names.clone());
    zones.insert(
        id.into(),
        ZoneEntry {
            key: key.into(),
            path: path.into(),
            names,
        },
    );
}

#[cfg(test)]
mod tests {
    use super::super::fixture::fresh;
    use super::super::model::WrappedSecret;
    use super::*;

    /// A zone that encrypts names keeps its name secret when its root moves (a rename
    /// through the mount, or found elsewhere at mount), and in the file on disk.
    #[test]
    fn a_moved_zone_keeps_its_name_secret() {
        let (_d, mut ks) = fresh();
        ks.create_key("k1", 0).unwrap();
        ks.register_zone("z1", "k1", "a").unwrap();
        let names = NameKeys {
            current: WrappedSecret {
                version: 1,
                wrapped: "00".repeat(60),
            },
            next: None,
        };
        ks.set_zone_names("z1", Some(names.clone())).unwrap();
        ks.move_zones(&[("z1".into(), "k1".into(), "b".into())]).unwrap();
        ks.register_zone("z1", "k1", "c").unwrap();
        ks.reload().unwrap();
        let z = &ks.body().zones["z1"];
        assert_eq!((z.path.as_str(), z.names.as_ref()), ("c", Some(&names)));
        assert!(ks.set_zone_names("nope", None).is_err());
    }
}
