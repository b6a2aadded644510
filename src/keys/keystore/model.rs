//! The keystore file's fields, as serde reads and writes them: the on-disk format.
//!
//! Fields added after the first format are left out of the JSON when empty, so that a
//! keystore written before they existed serializes to the same body and its MAC still
//! verifies.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Keystore file format this build writes and reads.
pub const KEYSTORE_FORMAT: u32 = 1;

/// Argon2id cost parameters, stored with the salt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes, 1 lane: about 0.2 s on a current core.
    fn default() -> Self {
        KdfParams {
            m_kib: 64 * 1024,
            t: 3,
            p: 1,
        }
    }
}

/// How the passphrase becomes the key that seals the master key (see `sealing`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Kdf {
    pub(super) algorithm: String,
    #[serde(flatten)]
    pub(super) params: KdfParams,
    pub(super) salt: String,
}

/// One version of a zone key, as stored: its material sealed by the master key
/// (empty for keys an external provider holds).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VersionEntry {
    /// The version number (1 for a key's first).
    pub version: u32,
    /// When the version was made, in Unix seconds.
    pub created: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(super) sealed: String,
}

/// Who may use a key's zones besides its owner and root (HDFS's KMS ACLs).
/// New fields are left out of the JSON when empty, so keystores written before they
/// existed keep authenticating.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Acl {
    /// Uids that may use the key.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub users: BTreeSet<u32>,
    /// Gids whose members may use the key (primary or supplementary group).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub groups: BTreeSet<u32>,
}

impl Acl {
    /// Whether the list names no one (only the owner and root may use the key).
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.groups.is_empty()
    }
}

/// A user or a group in a key's access list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    /// A user, by uid.
    User(u32),
    /// A group, by gid.
    Group(u32),
}

/// A zone key: its versions (newest last), who created it and who may use it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyEntry {
    /// The uid that created the key.
    pub owner: u32,
    /// When the key was made, in Unix seconds.
    pub created: u64,
    /// The key's versions, oldest first.
    pub versions: Vec<VersionEntry>,
    /// Who else may use the key.
    #[serde(default, skip_serializing_if = "Acl::is_empty")]
    pub acl: Acl,
    /// The material lives in the external key provider, not here.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub external: bool,
}

impl KeyEntry {
    /// The newest version (new files use it).
    pub fn current(&self) -> u32 {
        self.versions.last().map_or(0, |v| v.version)
    }

    /// Whether a process with `uid`, primary group `gid` and supplementary groups
    /// `groups()` (only asked for when needed: it costs a /proc read) may use the key.
    pub fn allows(&self, uid: u32, gid: u32, groups: impl FnOnce() -> Vec<u32>) -> bool {
        uid == 0
            || uid == self.owner
            || self.acl.users.contains(&uid)
            || self.acl.groups.contains(&gid)
            || (!self.acl.groups.is_empty() && groups().iter().any(|g| self.acl.groups.contains(g)))
    }
}

/// A zone known to the keystore (so keys used by zones cannot be deleted, and a
/// removed zone marker is noticed).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ZoneEntry {
    /// The name of the zone's key.
    pub key: String,
    /// Path of the zone root relative to the backing dir, as last seen.
    pub path: String,
    /// The name secret of a zone whose file names are encrypted (`zone create
    /// --encrypt-names`); absent for plain names. Here, in the authenticated registry,
    /// so that a user cannot turn name encryption off and it survives a lost marker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub names: Option<NameKeys>,
}

/// A zone's name secret, wrapped by its zone key like a file's DEK (associated data:
/// `format::names::secret_aad`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NameKeys {
    /// The secret names are encrypted with.
    pub current: WrappedSecret,
    /// While `zone reencrypt --data` moves the names to a new secret: that secret.
    /// Names are looked up under both until the job ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<WrappedSecret>,
}

/// A 256-bit secret wrapped by version `version` of its zone's key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WrappedSecret {
    /// The zone-key version that wraps it.
    pub version: u32,
    /// The wrapped secret, hex.
    pub wrapped: String,
}

/// What the keystore says, readable without the passphrase (nothing in it is secret:
/// key material is sealed).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Body {
    /// Key name to key.
    pub keys: BTreeMap<String, KeyEntry>,
    /// Zone id (hex) to zone.
    pub zones: BTreeMap<String, ZoneEntry>,
    /// The external key provider's command line (`exec:PROGRAM ARGS…`) that holds the
    /// material of keys marked `external`; absent for a purely local keystore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
}

impl Body {
    /// Zone roots whose file-name secret is wrapped by `name@version` (the current or
    /// the next one), as paths from the backing root ("/dir").
    pub fn zones_whose_names_need(&self, name: &str, version: u32) -> Vec<String> {
        self.zones
            .values()
            .filter(|z| z.key == name)
            .filter(|z| {
                z.names.as_ref().is_some_and(|n| {
                    n.current.version == version || n.next.as_ref().is_some_and(|x| x.version == version)
                })
            })
            .map(|z| format!("/{}", z.path))
            .collect()
    }

    /// Zone roots that use key `name`, as paths from the mount root ("/dir").
    pub fn zones_using(&self, name: &str) -> Vec<String> {
        self.zones
            .values()
            .filter(|z| z.key == name)
            .map(|z| format!("/{}", z.path))
            .collect()
    }
}

/// The whole file: the sealed master key (and, during a rotation, the one before), the
/// recovery slot, the body and its MAC.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct StoreFile {
    pub(super) format: u32,
    pub(super) kdf: Kdf,
    pub(super) master: String,
    /// While `passwd --rotate-master` runs: the master key before, sealed like
    /// `master`, still accepted on zone markers until every marker is rewritten.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) previous_master: Option<String>,
    /// The recovery key's way to the master key (see `recovery`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) recovery: Option<crate::keys::recovery::Slot>,
    pub(super) body: Body,
    pub(super) mac: String,
}

#[cfg(test)]
mod tests {
    use super::super::fixture::fresh;
    use super::super::Keystore;

    #[test]
    fn keystores_without_the_new_fields_still_authenticate() {
        // the fields added for ACLs and external keys are left out when empty, so the
        // MAC over a keystore written before they existed still verifies
        let (d, mut ks) = fresh();
        ks.create_key("k1", 0).unwrap();
        let text = std::fs::read_to_string(d.path().join(".ezfs/keystore.json")).unwrap();
        for field in ["acl", "external", "provider"] {
            assert!(!text.contains(field), "{field} written while empty:\n{text}");
        }
        Keystore::unlock(d.path(), b"pw").unwrap();
    }
}
