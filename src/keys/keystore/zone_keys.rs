//! Zone keys and their versions: create, look up, roll, prune, delete; keys whose
//! material an external provider holds (only their versions are recorded here), and
//! the setting that names that provider.

use super::model::{Acl, KeyEntry, VersionEntry};
use super::{sealing, Keystore};
use crate::crypto::Key;
use crate::keys::{validate_key_name, KeyError};
use crate::text::unix_now;

impl Keystore {
    /// The entry of key `name`.
    pub fn key(&self, name: &str) -> Result<&KeyEntry, KeyError> {
        self.body
            .keys
            .get(name)
            .ok_or_else(|| KeyError::NoSuchKey(name.into()))
    }

    /// Newest version of key `name`.
    pub fn current_version(&self, name: &str) -> Result<u32, KeyError> {
        self.body
            .keys
            .get(name)
            .map(KeyEntry::current)
            .ok_or_else(|| KeyError::NoSuchKey(name.into()))
    }

    /// Material of `name@version`.
    pub fn material(&self, name: &str, version: u32) -> Result<&Key, KeyError> {
        if !self.body.keys.contains_key(name) {
            return Err(KeyError::NoSuchKey(name.into()));
        }
        self.material
            .get(&(name.to_owned(), version))
            .ok_or_else(|| KeyError::NoSuchVersion(name.into(), version))
    }

    /// Creates key `name` at version 1, owned by `owner` (a uid).
    pub fn create_key(&mut self, name: &str, owner: u32) -> Result<(), KeyError> {
        self.add_key(name, owner, None)
    }

    /// Records key `name`, whose material the external provider holds, at `version`.
    pub fn create_external_key(&mut self, name: &str, owner: u32, version: u32) -> Result<(), KeyError> {
        self.add_key(name, owner, Some(version))
    }

    /// `external`: the version the provider made, for a key this keystore holds no
    /// material of; `None` to make version 1 here.
    fn add_key(&mut self, name: &str, owner: u32, external: Option<u32>) -> Result<(), KeyError> {
        validate_key_name(name)?;
        self.update(|ks| {
            if ks.body.keys.contains_key(name) {
                return Err(KeyError::KeyExists(name.into()));
            }
            let v = match external {
                Some(version) => VersionEntry {
                    version,
                    created: unix_now(),
                    sealed: String::new(),
                },
                None => sealing::new_version(&ks.master, name, 1),
            };
            ks.body.keys.insert(
                name.into(),
                KeyEntry {
                    owner,
                    created: unix_now(),
                    versions: vec![v],
                    acl: Acl::default(),
                    external: external.is_some(),
                },
            );
            Ok(())
        })
    }

    /// Adds a new version of `name`; returns it. New files use it from now on.
    pub fn roll_key(&mut self, name: &str) -> Result<u32, KeyError> {
        self.update(|ks| {
            let next = ks.current_version(name)? + 1;
            if ks.key(name)?.external {
                return Err(KeyError::Other(format!(
                    "key '{name}' lives in the external key provider; roll it there"
                )));
            }
            let v = sealing::new_version(&ks.master, name, next);
            ks.body.keys.get_mut(name).expect("checked").versions.push(v);
            Ok(next)
        })
    }

    /// Records `version` (made by the external provider) as the newest of `name`.
    pub fn add_external_version(&mut self, name: &str, version: u32) -> Result<(), KeyError> {
        self.update(|ks| {
            let current = ks.current_version(name)?;
            if version <= current {
                return Err(KeyError::Other(format!(
                    "the key provider rolled '{name}' to version {version}, not above {current}"
                )));
            }
            let k = ks.body.keys.get_mut(name).expect("checked");
            k.versions.push(VersionEntry {
                version,
                created: unix_now(),
                sealed: String::new(),
            });
            Ok(())
        })
    }

    /// Drops every version of `name` but the newest for which `in_use` is false and
    /// that wraps no zone's file-name secret; returns the dropped versions.
    pub fn prune_key(&mut self, name: &str, in_use: &dyn Fn(u32) -> bool) -> Result<Vec<u32>, KeyError> {
        self.update(|ks| {
            let current = ks.current_version(name)?;
            let names_need = |v: u32| !ks.body.zones_whose_names_need(name, v).is_empty();
            let keep: Vec<u32> = ks.body.keys[name]
                .versions
                .iter()
                .map(|v| v.version)
                .filter(|&v| v == current || in_use(v) || names_need(v))
                .collect();
            let k = ks.body.keys.get_mut(name).expect("checked");
            let mut dropped = Vec::new();
            k.versions.retain(|v| {
                let keep = keep.contains(&v.version);
                if !keep {
                    dropped.push(v.version);
                }
                keep
            });
            Ok(dropped)
        })
    }

    /// Deletes key `name` and all its versions; refused while a zone uses it.
    pub fn delete_key(&mut self, name: &str) -> Result<(), KeyError> {
        self.update(|ks| {
            if !ks.body.keys.contains_key(name) {
                return Err(KeyError::NoSuchKey(name.into()));
            }
            let zones = ks.body.zones_using(name);
            if !zones.is_empty() {
                return Err(KeyError::KeyInUse {
                    name: name.into(),
                    zones,
                });
            }
            ks.body.keys.remove(name);
            Ok(())
        })
    }

    /// Sets the external key provider (`exec:PROGRAM ARGS…`).
    pub fn set_provider(&mut self, provider: &str) -> Result<(), KeyError> {
        self.update(|ks| {
            ks.body.provider = Some(provider.into());
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture::fresh;
    use super::*;

    #[test]
    fn roll_delete_and_zones() {
        let (_d, mut ks) = fresh();
        ks.create_key("k1", 0).unwrap();
        assert!(matches!(ks.create_key("k1", 0), Err(KeyError::KeyExists(_))));
        assert!(matches!(ks.create_key("bad name", 0), Err(KeyError::BadName(_))));
        assert_eq!(ks.roll_key("k1").unwrap(), 2);
        assert_eq!(ks.current_version("k1").unwrap(), 2);
        assert_ne!(ks.material("k1", 1).unwrap(), ks.material("k1", 2).unwrap());
        assert!(matches!(ks.roll_key("nokey"), Err(KeyError::NoSuchKey(_))));
        ks.register_zone("z1", "k1", "secret").unwrap();
        let e = ks.delete_key("k1").unwrap_err();
        assert!(e.to_string().contains("secret"), "{e}");
        ks.unregister_zone("z1").unwrap();
        ks.delete_key("k1").unwrap();
        assert!(matches!(ks.material("k1", 1), Err(KeyError::NoSuchKey(_))));
    }

    #[test]
    fn prune_keeps_the_newest_and_versions_in_use() {
        let (_d, mut ks) = fresh();
        ks.create_key("k1", 0).unwrap();
        for _ in 0..3 {
            ks.roll_key("k1").unwrap();
        }
        let dropped = ks.prune_key("k1", &|v| v == 2).unwrap();
        assert_eq!(dropped, vec![1, 3]);
        let left: Vec<u32> = ks.key("k1").unwrap().versions.iter().map(|v| v.version).collect();
        assert_eq!(left, vec![2, 4]);
        assert!(matches!(ks.material("k1", 1), Err(KeyError::NoSuchVersion(..))));
        assert!(ks.material("k1", 2).is_ok());
        assert_eq!(ks.prune_key("k1", &|_| false).unwrap(), vec![2]);
        assert_eq!(ks.current_version("k1").unwrap(), 4, "the newest always stays");
    }

    #[test]
    fn external_keys_hold_no_material() {
        let (d, mut ks) = fresh();
        ks.set_provider("exec:/bin/kms").unwrap();
        ks.create_external_key("kx", 0, 3).unwrap();
        assert_eq!(ks.current_version("kx").unwrap(), 3);
        assert!(ks.roll_key("kx").is_err(), "rolled by the provider, not here");
        ks.add_external_version("kx", 4).unwrap();
        assert!(ks.add_external_version("kx", 4).is_err(), "versions only grow");
        let text = std::fs::read_to_string(d.path().join(".ezfs/keystore.json")).unwrap();
        assert!(!text.contains("sealed"), "{text}");
        let ks2 = Keystore::unlock(d.path(), b"pw").unwrap();
        assert!(ks2.key("kx").unwrap().external);
        assert_eq!(ks2.body().provider.as_deref(), Some("exec:/bin/kms"));
    }
}
