//! What the keystore seals, and how: the KDF from passphrase to key-encryption key,
//! the associated data that binds each sealed value to its place, and the seals
//! themselves (master key, previous master key, key material, the body's MAC).
//!
//! Every associated data starts with its own label, so a value sealed for one field
//! never opens as another (a key version's material as the master key, say).

use super::model::{Body, Kdf, KdfParams, VersionEntry, KEYSTORE_FORMAT};
use crate::crypto::{random_bytes, Cipher, Key, KEY_LEN, NONCE_LEN, TAG_LEN, WRAPPED_KEY_LEN};
use crate::keys::KeyError;
use crate::text::{hex, unhex, unhex_vec, unix_now};
use std::collections::HashMap;
use zeroize::Zeroizing;

/// The only KDF this format knows.
pub(super) const KDF_ALGORITHM: &str = "argon2id";

impl Kdf {
    /// Argon2id with `params` and a new random salt (every passphrase change gets one).
    pub(super) fn fresh(params: KdfParams) -> Kdf {
        Kdf {
            algorithm: KDF_ALGORITHM.into(),
            params,
            salt: hex(&random_bytes::<16>()),
        }
    }
}

fn master_aad(kdf: &Kdf) -> Vec<u8> {
    let mut a = b"ezfs-master\0".to_vec();
    a.extend_from_slice(&KEYSTORE_FORMAT.to_le_bytes());
    for v in [kdf.params.m_kib, kdf.params.t, kdf.params.p] {
        a.extend_from_slice(&v.to_le_bytes());
    }
    a.extend_from_slice(kdf.salt.as_bytes());
    a
}

/// Associated data of the previous master key while a rotation runs.
fn previous_aad(kdf: &Kdf) -> Vec<u8> {
    let mut a = b"ezfs-previous-master\0".to_vec();
    a.extend_from_slice(&master_aad(kdf));
    a
}

fn material_aad(name: &str, version: u32) -> Vec<u8> {
    let mut a = b"ezfs-key\0".to_vec();
    a.extend_from_slice(name.as_bytes());
    a.push(0);
    a.extend_from_slice(&version.to_le_bytes());
    a
}

fn body_aad(body: &Body) -> Vec<u8> {
    let mut a = b"ezfs-body\0".to_vec();
    a.extend_from_slice(&serde_json::to_vec(body).expect("body serializes"));
    a
}

/// The key-encryption key of `passphrase` under `kdf` (Argon2id).
pub(super) fn derive_kek(passphrase: &[u8], kdf: &Kdf) -> Result<Cipher, KeyError> {
    let salt = unhex_vec(&kdf.salt).ok_or_else(|| KeyError::Other("keystore salt is not hex".into()))?;
    let params = argon2::Params::new(kdf.params.m_kib, kdf.params.t, kdf.params.p, Some(KEY_LEN))
        .map_err(|e| KeyError::Other(format!("invalid Argon2id parameters: {e}")))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    argon
        .hash_password_into(passphrase, &salt, &mut *out)
        .map_err(|e| KeyError::Other(format!("Argon2id failed: {e}")))?;
    Ok(Key::from_slice(&out[..]).expect("32 bytes").cipher())
}

/// A sealed key field (hex of one wrap); `None` if it is not one.
pub(super) fn decode_wrapped(s: &str) -> Option<[u8; WRAPPED_KEY_LEN]> {
    unhex(s)
}

/// The master key sealed under the passphrase's `kek`.
pub(super) fn seal_master(kek: &Cipher, kdf: &Kdf, master: &Key) -> String {
    hex(&kek.wrap_key(&master_aad(kdf), master))
}

/// The master key, if `kek` (the passphrase) is the one it was sealed under.
pub(super) fn unseal_master(kek: &Cipher, kdf: &Kdf, wrapped: &[u8; WRAPPED_KEY_LEN]) -> Option<Key> {
    kek.unwrap_key(&master_aad(kdf), wrapped).ok()
}

/// The master key before a rotation, sealed under the passphrase's `kek`.
pub(super) fn seal_previous(kek: &Cipher, kdf: &Kdf, old: &Key) -> String {
    hex(&kek.wrap_key(&previous_aad(kdf), old))
}

/// The master key before a rotation.
pub(super) fn unseal_previous(kek: &Cipher, kdf: &Kdf, wrapped: &[u8; WRAPPED_KEY_LEN]) -> Option<Key> {
    kek.unwrap_key(&previous_aad(kdf), wrapped).ok()
}

/// The material of `name@version` sealed under the master key.
pub(super) fn seal_material(master: &Cipher, name: &str, version: u32, key: &Key) -> String {
    hex(&master.wrap_key(&material_aad(name, version), key))
}

/// A new version `version` of `name`: random material, sealed, created now.
pub(super) fn new_version(master: &Cipher, name: &str, version: u32) -> VersionEntry {
    VersionEntry {
        version,
        created: unix_now(),
        sealed: seal_material(master, name, version, &Key::random()),
    }
}

/// The material of every version the keystore holds (external keys hold none), by
/// (name, version); `Err` says why a field is corrupt.
pub(super) fn unseal_materials(master: &Cipher, body: &Body) -> Result<HashMap<(String, u32), Key>, String> {
    let mut material = HashMap::new();
    for (name, entry) in body.keys.iter().filter(|(_, e)| !e.external) {
        for v in &entry.versions {
            let wrapped = decode_wrapped(&v.sealed).ok_or("bad sealed key field")?;
            let key = master
                .unwrap_key(&material_aad(name, v.version), &wrapped)
                .map_err(|_| format!("{name}@{} does not authenticate", v.version))?;
            material.insert((name.clone(), v.version), key);
        }
    }
    Ok(material)
}

/// The MAC of the body under the master key (the body is public, but an edit, such as
/// a removed zone or an added grant, must be noticed).
pub(super) fn body_mac(master: &Cipher, body: &Body) -> String {
    hex(&master.mac(&body_aad(body)))
}

/// Checks the body's MAC; `Err` says why it fails.
pub(super) fn check_body_mac(master: &Cipher, body: &Body, mac: &str) -> Result<(), &'static str> {
    let mac = unhex::<{ NONCE_LEN + TAG_LEN }>(mac).ok_or("bad mac field")?;
    master
        .verify_mac(&body_aad(body), &mac)
        .map_err(|_| "authentication failed (was it edited?)")
}

#[cfg(test)]
mod tests {
    use super::super::fixture::fresh;
    use super::super::Keystore;
    use crate::keys::KeyError;

    #[test]
    fn corrupt_keystore_is_a_clear_error() {
        let (d, mut ks) = fresh();
        ks.create_key("k1", 0).unwrap();
        let p = d.path().join(".ezfs/keystore.json");
        let good = std::fs::read(&p).unwrap();
        for cut in [0, 1, good.len() / 2, good.len() - 2] {
            std::fs::write(&p, &good[..cut]).unwrap();
            let e = Keystore::unlock(d.path(), b"pw").unwrap_err();
            assert!(matches!(e, KeyError::Corrupt { .. }), "cut {cut}: {e}");
        }
        // flip one hex digit of every field in turn: never a panic, never success
        let text = String::from_utf8(good.clone()).unwrap();
        for field in ["\"sealed\": \"", "\"mac\": \"", "\"master\": \"", "\"salt\": \""] {
            let at = text.find(field).unwrap() + field.len();
            let mut t = text.clone().into_bytes();
            t[at] = if t[at] == b'0' { b'1' } else { b'0' };
            std::fs::write(&p, &t).unwrap();
            assert!(Keystore::unlock(d.path(), b"pw").is_err(), "{field}");
        }
        // an edited body (e.g. a zone removed) fails the MAC
        let edited = text.replace("\"owner\": 0", "\"owner\": 1");
        std::fs::write(&p, edited).unwrap();
        assert!(matches!(
            Keystore::unlock(d.path(), b"pw"),
            Err(KeyError::Corrupt { .. })
        ));
    }
}
