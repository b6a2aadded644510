//! What a mounted filesystem needs from the keys, as one small interface.
//!
//! Beyond wrapping and unwrapping data keys ([`KeyProvider`]), the filesystem checks
//! zone markers against the keystore's MAC keys, asks whether a user may use a key
//! (`ezfs key grant`), and keeps the authenticated zone registry up to date. It holds
//! a `dyn ZoneKeys`, never the concrete keystore: a new key provider (an external
//! KMS) plugs in behind [`LocalProvider`] without any change to `fs/`.

use super::keystore::{Body, NameKeys, ZoneEntry};
use super::{KeyError, KeyProvider, LocalProvider};
use crate::crypto::Cipher;
use std::collections::BTreeMap;

/// The zone registry: zone id (hex) to its key and root path.
pub type Registry = BTreeMap<String, ZoneEntry>;

/// The keys of a mount: data-key wrapping plus the authenticated state that decides
/// who may decrypt what.
pub trait ZoneKeys: KeyProvider {
    /// Calls `f` with the keys zone markers are authenticated with; the first is the
    /// one new markers are sealed with. A callback, so no key material is copied.
    fn with_marker_keys(&self, f: &mut dyn FnMut(&[&Cipher]));
    /// Whether the user `uid`/`gid` (with supplementary `groups`, asked for only if
    /// needed) may use key `name`: root and the key's owner always may.
    fn may_use(
        &self,
        name: &str,
        uid: u32,
        gid: u32,
        groups: &dyn Fn() -> Vec<u32>,
    ) -> Result<bool, KeyError>;
    /// Calls `f` with the zone registry.
    fn with_registry(&self, f: &mut dyn FnMut(&Registry));
    /// Records a new zone, or a zone's new root path.
    fn register_zone(&self, id: &str, key: &str, path: &str) -> Result<(), KeyError>;
    /// Sets a zone's name secret (`None`: plain names).
    fn set_zone_names(&self, id: &str, names: Option<NameKeys>) -> Result<(), KeyError>;
    /// Records new root paths of zones a rename moved: (id, key, path) each.
    fn move_zones(&self, moved: &[(String, String, String)]) -> Result<(), KeyError>;
    /// Forgets a zone whose root was removed.
    fn unregister_zone(&self, id: &str) -> Result<(), KeyError>;
    /// Re-reads the key state (the command line changed it).
    fn reload(&self) -> Result<(), KeyError>;
    /// The keys, their versions and ACLs and the registry, without key material
    /// (`ezfs key list` through the mount).
    fn listing(&self) -> Body;
    /// The KMS client side's state, when keys are in a KMS and it has been used.
    fn kms_status(&self) -> Option<crate::keys::kms::KmsStatus> {
        None
    }
}

/// A copy of the registry (for walks that must not hold the keys' lock).
pub fn registry(keys: &dyn ZoneKeys) -> Registry {
    let mut out = Registry::new();
    keys.with_registry(&mut |r| out = r.clone());
    out
}

impl ZoneKeys for LocalProvider {
    fn with_marker_keys(&self, f: &mut dyn FnMut(&[&Cipher])) {
        f(&self.store().read().marker_keys())
    }

    fn may_use(
        &self,
        name: &str,
        uid: u32,
        gid: u32,
        groups: &dyn Fn() -> Vec<u32>,
    ) -> Result<bool, KeyError> {
        // a key created since the keystore was read is found after a reload
        self.current_version(name)?;
        let store = self.store().read();
        Ok(store.key(name)?.allows(uid, gid, groups))
    }

    fn with_registry(&self, f: &mut dyn FnMut(&Registry)) {
        f(&self.store().read().body().zones)
    }

    fn register_zone(&self, id: &str, key: &str, path: &str) -> Result<(), KeyError> {
        self.store().write().register_zone(id, key, path)
    }

    fn move_zones(&self, moved: &[(String, String, String)]) -> Result<(), KeyError> {
        self.store().write().move_zones(moved)
    }

    fn set_zone_names(&self, id: &str, names: Option<NameKeys>) -> Result<(), KeyError> {
        self.store().write().set_zone_names(id, names)
    }

    fn unregister_zone(&self, id: &str) -> Result<(), KeyError> {
        self.store().write().unregister_zone(id)
    }

    fn reload(&self) -> Result<(), KeyError> {
        LocalProvider::reload(self)
    }

    fn listing(&self) -> Body {
        self.store().read().body().clone()
    }

    fn kms_status(&self) -> Option<crate::keys::kms::KmsStatus> {
        self.kms_client().map(|k| k.status())
    }
}
