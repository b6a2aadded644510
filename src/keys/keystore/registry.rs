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
            let names = ks.body.zones.get(zone_id).and_then(|z| z.names.clone());
            ks.body.zones.insert(
                zone_id.into(),
                ZoneEntry {
                    key: key.into(),
                    path: path.into(),
                    names,
                },
            );
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
                let names = ks.body.zones.get(id).and_then(|z| z.names.clone());
                ks.body.zones.insert(
                    id.clone(),
                    ZoneEntry {
                        key: key.clone(),
                        path: path.clone(),
                        names,
                    },
                );
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
