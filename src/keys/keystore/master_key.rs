//! The master key: the keys that authenticate zone markers, its rotation, the
//! passphrase that seals it, and the recovery key that is a second way to it.

use super::model::Kdf;
use super::{sealing, Keystore};
use crate::crypto::{Cipher, Key};
use crate::keys::{recovery, KeyError};

impl Keystore {
    /// The master key itself: only for tests that look for it where it must not be
    /// (a core dump, say).
    #[doc(hidden)]
    pub fn master_key(&self) -> &Key {
        &self.master_key
    }

    /// The cipher that authenticates zone markers (the master key; callers separate
    /// uses by their associated data).
    pub fn master(&self) -> &Cipher {
        &self.master
    }

    /// The keys zone markers may be authenticated with: the master key, and during a
    /// master-key rotation the one before it.
    pub fn marker_keys(&self) -> Vec<&Cipher> {
        std::iter::once(&self.master)
            .chain(self.previous.as_ref().map(|(_, c)| c))
            .collect()
    }

    /// Whether a master-key rotation was started and not finished.
    pub fn rotating(&self) -> bool {
        self.rotation_pending
    }

    /// Whether the keystore has a recovery key.
    pub fn has_recovery(&self) -> bool {
        self.recovery.is_some()
    }

    /// Adds (or replaces) the recovery key; returns it, to be shown once.
    pub fn new_recovery_key(&mut self) -> Result<Key, KeyError> {
        let (slot, rk) = recovery::new_slot(&self.master_key);
        self.update(|ks| {
            ks.recovery = Some(slot);
            Ok(())
        })?;
        Ok(rk)
    }

    /// Starts a master-key rotation: a new random master key seals every key version
    /// and the body, and is sealed under `passphrase` (a new salt); the master before
    /// stays, sealed, only to authenticate zone markers until they are rewritten
    /// ([`Keystore::finish_rotation`]). Afterwards an old copy of the keystore opens
    /// nothing made later.
    pub fn rotate_master(&mut self, passphrase: &[u8]) -> Result<(), KeyError> {
        let _lock = self.lock()?;
        self.reload()?;
        if self.rotation_pending {
            return Err(KeyError::Other(
                "a master-key rotation is already under way".into(),
            ));
        }
        let kdf = Kdf::fresh(self.kdf.params);
        let kek = sealing::derive_kek(passphrase, &kdf)?;
        let new = Key::random();
        let cipher = new.cipher();
        for (name, entry) in self.body.keys.iter_mut().filter(|(_, e)| !e.external) {
            for v in &mut entry.versions {
                let key = self
                    .material
                    .get(&(name.clone(), v.version))
                    .ok_or_else(|| KeyError::NoSuchVersion(name.clone(), v.version))?;
                v.sealed = sealing::seal_material(&cipher, name, v.version, key);
            }
        }
        if let Some(slot) = &self.recovery {
            // the same recovery key opens the new master key
            self.recovery = Some(
                recovery::rewrap(slot, &self.master, &new)
                    .ok_or_else(|| KeyError::Other("the recovery slot does not authenticate".into()))?,
            );
        }
        let old = std::mem::replace(&mut self.master_key, new);
        let old_cipher = std::mem::replace(&mut self.master, cipher);
        self.previous = Some((sealing::seal_previous(&kek, &kdf, &old), old_cipher));
        self.sealed_master = sealing::seal_master(&kek, &kdf, &self.master_key);
        self.kdf = kdf;
        self.save()?;
        self.reload()
    }

    /// Ends a master-key rotation (every marker now carries the new master's MAC).
    pub fn finish_rotation(&mut self) -> Result<(), KeyError> {
        self.update(|ks| {
            ks.previous = None;
            Ok(())
        })
    }

    /// Re-seals the master key under a new passphrase; nothing else changes.
    pub fn change_passphrase(&mut self, new_passphrase: &[u8]) -> Result<(), KeyError> {
        let kdf = Kdf::fresh(self.kdf.params);
        let kek = sealing::derive_kek(new_passphrase, &kdf)?;
        self.update(|ks| {
            // reload() proved the file still authenticates under this master key
            if ks.rotation_pending {
                // the previous master is sealed under the old passphrase's key
                return Err(KeyError::Other(
                    "finish the master-key rotation first ('ezfs passwd --rotate-master')".into(),
                ));
            }
            ks.sealed_master = sealing::seal_master(&kek, &kdf, &ks.master_key);
            ks.kdf = kdf;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture::fresh;
    use super::*;

    #[test]
    fn passphrase_change_keeps_keys() {
        let (d, mut ks) = fresh();
        ks.create_key("k1", 0).unwrap();
        ks.change_passphrase(b"new").unwrap();
        assert!(matches!(
            Keystore::unlock(d.path(), b"pw"),
            Err(KeyError::WrongPassphrase)
        ));
        let ks2 = Keystore::unlock(d.path(), b"new").unwrap();
        assert_eq!(ks2.material("k1", 1).unwrap(), ks.material("k1", 1).unwrap());
        // a process that unlocked before the change still reloads fine
        ks.reload().unwrap();
    }
}
