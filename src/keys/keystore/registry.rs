//! The zone registry: which directories are zones and with which key. The keystore,
//! not a marker planted in a directory, decides what is a zone; and a key a zone uses
//! cannot be deleted.

use super::model::ZoneEntry;
use super::Keystore;
use crate::keys::KeyError;

impl Keystore {
    /// Records a new zone (or its new path after a rename).
    pub fn register_zone(&mut self, zone_id: &str, key: &str, path: &str) -> Result<(), KeyError> {
        self.update(|ks| {
            ks.current_version(key)?;
            ks.body.zones.insert(
                zone_id.into(),
                ZoneEntry {
                    key: key.into(),
                    path: path.into(),
                },
            );
            Ok(())
        })
    }

    /// Records new paths of zones (a rename moved them): (id, key, path) each.
    pub fn move_zones(&mut self, moved: &[(String, String, String)]) -> Result<(), KeyError> {
        self.update(|ks| {
            for (id, key, path) in moved {
                ks.body.zones.insert(
                    id.clone(),
                    ZoneEntry {
                        key: key.clone(),
                        path: path.clone(),
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
