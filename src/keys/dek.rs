//! A file's data key and its header, whoever holds the zone key: a version 1 header
//! when the keystore (or an `exec:` program) wraps the DEK, a version 2 header when a
//! KMS does (see ezfs-format(5)). The one place that decides which, so the filesystem,
//! the re-encryption jobs and fsck cannot disagree.

use super::{KeyError, KeyProvider};
use crate::crypto::{random_bytes, Key};
use crate::format::header::Header;

/// A new file's header and DEK in zone `zone_id`, under `key`'s newest version.
pub fn new_file(keys: &dyn KeyProvider, zone_id: [u8; 16], key: &str) -> Result<(Header, Key), KeyError> {
    let version = keys.current_version(key)?;
    let file_id = random_bytes::<16>();
    match keys.kms(key)? {
        None => {
            let dek = Key::random();
            Ok((wrap_local(keys, file_id, zone_id, key, version, &dek)?, dek))
        }
        Some(kms) => {
            let p = kms.new_dek(key, version)?;
            let h = Header::kms(file_id, zone_id, key.into(), version, p.key_id, p.edek, &p.dek);
            Ok((h, p.dek))
        }
    }
}

fn wrap_local(
    keys: &dyn KeyProvider,
    file_id: [u8; 16],
    zone_id: [u8; 16],
    key: &str,
    version: u32,
    dek: &Key,
) -> Result<Header, KeyError> {
    let aad = Header::aad(&file_id, &zone_id, key, version);
    Ok(Header {
        file_id,
        zone_id,
        key_name: key.to_owned(),
        key_version: version,
        edek: keys.wrap(key, version, &aad, dek)?,
        kms: None,
    })
}

/// The header of file `file_id` in zone `zone_id` with its DEK `dek` wrapped anew by
/// `key@version` (a re-wrap: the data stays as it is).
pub fn rewrap(
    keys: &dyn KeyProvider,
    file_id: [u8; 16],
    zone_id: [u8; 16],
    key: &str,
    version: u32,
    dek: &Key,
) -> Result<Header, KeyError> {
    match keys.kms(key)? {
        None => wrap_local(keys, file_id, zone_id, key, version, dek),
        Some(kms) => {
            let (key_id, edek) = kms.wrap_dek(key, version, dek)?;
            Ok(Header::kms(
                file_id,
                zone_id,
                key.into(),
                version,
                key_id,
                edek,
                dek,
            ))
        }
    }
}

/// The DEK of the file with header `h`, authenticated: a version 1 EDEK by its wrap, a
/// version 2 header by its MAC under the DEK the KMS returned. A header whose version
/// does not match where its key lives is refused (a KMS key never unwraps a version 1
/// EDEK, nor the keystore a version 2 one).
pub fn unwrap(keys: &dyn KeyProvider, h: &Header) -> Result<Key, KeyError> {
    let kms = keys.kms(&h.key_name)?;
    match (&h.kms, kms) {
        (None, None) => keys.unwrap(&h.key_name, h.key_version, &h.own_aad(), &h.edek),
        (Some(w), Some(kms)) => {
            let dek = kms.unwrap_dek(&h.key_name, h.key_version, &w.key_id, &h.edek, &h.file_id)?;
            h.check_mac(&dek)
                .map_err(|_| KeyError::Unwrap(h.key_name.clone(), h.key_version))?;
            Ok(dek)
        }
        (None, Some(_)) => Err(KeyError::Other(format!(
            "key {} is in the KMS, but the header has a locally wrapped (version 1) EDEK",
            h.key_name
        ))),
        (Some(_), None) => Err(KeyError::Other(format!(
            "the header has a KMS-wrapped (version 2) EDEK, but key {} is not in the KMS",
            h.key_name
        ))),
    }
}
