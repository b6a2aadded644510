//! The provider a keystore names for keys it holds no material of: a program
//! (`exec:`) or a KMS (`kmip://`). Key commands (create, roll, retire) go through
//! here; wrapping goes through [`super::LocalProvider`].

use super::audit::AuditLog;
use super::exec::{ExecProvider, EXEC_PREFIX};
use super::kms::{object_name, KmsKeys, KmsOptions};
use super::KeyError;
use std::path::Path;
use std::sync::Arc;

/// The prefix of a provider setting that names KMIP servers.
pub const KMIP_PREFIX: &str = "kmip://";

/// An external key provider.
pub enum External {
    /// A program speaking ezfs's line protocol.
    Exec(ExecProvider),
    /// A KMS: its client side with the pool, the DEK cache and the audit log.
    Kms(Arc<KmsKeys>),
}

impl External {
    /// The provider of setting `setting` for the keystore in `ezfs_dir`.
    pub fn from_setting(setting: &str, ezfs_dir: &Path, options: &KmsOptions) -> Result<External, KeyError> {
        if setting.starts_with(KMIP_PREFIX) {
            let kms = super::kms::kmip::connect(setting)?;
            return Ok(External::Kms(KmsKeys::new(
                kms,
                options.clone(),
                Some(AuditLog::new(ezfs_dir)),
            )));
        }
        if setting.starts_with(EXEC_PREFIX) {
            return Ok(External::Exec(ExecProvider::from_setting(setting)?));
        }
        Err(KeyError::Other(format!(
            "unknown key provider '{setting}': use exec:PROGRAM or kmip://HOST:PORT?ca=…&cert=…&key=…"
        )))
    }

    /// Creates key `name`; returns the versions it has (a KMS may already hold
    /// versions of that name, made from another backing dir or host: they are
    /// adopted, the KMS being the source of truth).
    pub fn create(&self, name: &str) -> Result<Vec<u32>, KeyError> {
        match self {
            External::Exec(p) => Ok(vec![p.create(name)?]),
            External::Kms(k) => {
                let found = self.versions_in_kms(k, name, 1)?;
                if !found.is_empty() {
                    return Ok(found);
                }
                k.kms().create_key(&object_name(name, 1))?;
                Ok(vec![1])
            }
        }
    }

    /// Adds a version to key `name`, whose newest is `current`; returns the new one.
    pub fn roll(&self, name: &str, current: u32) -> Result<u32, KeyError> {
        match self {
            External::Exec(p) => p.roll(name),
            External::Kms(k) => {
                let next = current + 1;
                if k.kms().locate(&object_name(name, next))?.is_empty() {
                    k.kms().create_key(&object_name(name, next))?;
                }
                Ok(next)
            }
        }
    }

    /// Revokes and destroys `name@version` in the KMS (a program's keys are its own
    /// business: nothing is done).
    pub fn retire(&self, name: &str, version: u32) -> Result<(), KeyError> {
        match self {
            External::Exec(_) => Ok(()),
            External::Kms(k) => {
                for id in k.kms().locate(&object_name(name, version))? {
                    k.kms().retire(&id)?;
                }
                Ok(())
            }
        }
    }

    /// The state of `name@version` in the KMS (`None` for a program's keys).
    pub fn state(&self, name: &str, version: u32) -> Option<String> {
        let External::Kms(k) = self else { return None };
        Some(match k.kms().locate(&object_name(name, version)) {
            Ok(ids) if ids.is_empty() => "missing".into(),
            Ok(ids) => ids
                .iter()
                .map(|id| k.kms().state(id).unwrap_or_else(|e| format!("unknown ({e})")))
                .collect::<Vec<_>>()
                .join(","),
            Err(e) => format!("unknown ({e})"),
        })
    }

    /// The consecutive versions of `name` the KMS holds, from `from` up.
    fn versions_in_kms(&self, k: &KmsKeys, name: &str, from: u32) -> Result<Vec<u32>, KeyError> {
        let mut out = Vec::new();
        let mut v = from;
        while !k.kms().locate(&object_name(name, v))?.is_empty() {
            out.push(v);
            v += 1;
        }
        Ok(out)
    }
}
