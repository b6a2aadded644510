//! `ezfs key create|roll|prune|delete`: a key's life, in the local keystore or, for
//! keys it holds, through the external key provider (a program or a KMS, whose
//! versions the keystore records). With a KMS, every key operation is also written
//! to the audit log.

use super::super::backing::{notify_mount, scan_usage, unlock, BackingArg};
use super::super::{CliResult, Failure, PassArgs};
use crate::keys::audit::record_command;
use crate::keys::external::External;
use crate::keys::kms::KmsOptions;
use crate::keys::{KeyError, Keystore};

fn real_uid() -> u32 {
    // SAFETY: getuid cannot fail.
    unsafe { libc::getuid() }
}

/// The external key provider, when the keystore names one. Its pool stays empty: a
/// command makes no files.
fn external(ks: &Keystore) -> Result<Option<External>, Failure> {
    let mut options = KmsOptions::default();
    options.pool.size = 0;
    Ok(ks
        .body()
        .provider
        .as_deref()
        .map(|s| External::from_setting(s, ks.dir(), &options))
        .transpose()?)
}

/// Whether the keystore's provider is a KMS (whose key operations are audited).
fn audited(ks: &Keystore) -> bool {
    ks.body()
        .provider
        .as_deref()
        .is_some_and(|p| p.starts_with(crate::keys::external::KMIP_PREFIX))
}

/// Where a key command's audit lines go: the keystore's audit log, when a KMS holds
/// keys.
pub(super) struct Auditor(Option<std::path::PathBuf>);

impl Auditor {
    /// The auditor of keystore `ks`'s key commands.
    pub(super) fn of(ks: &Keystore) -> Auditor {
        Auditor(audited(ks).then(|| ks.dir().to_path_buf()))
    }

    /// Runs `f` (operation `op` on key `name`) and records how it went.
    pub(super) fn run<T>(
        &self,
        op: &str,
        name: &str,
        version: impl Fn(&T) -> Option<u32>,
        f: impl FnOnce() -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let r = f();
        if let Some(dir) = &self.0 {
            let v = r.as_ref().ok().and_then(&version);
            record_command(dir, op, name, v, &r.as_ref().map_err(|e| e.msg.clone()));
        }
        r
    }
}

pub(super) fn create(name: &str, at: &BackingArg, pass: &PassArgs) -> CliResult {
    let backing = at.resolve()?;
    crate::keys::validate_key_name(name)?;
    let mut ks = unlock(&backing, pass)?;
    let ext = external(&ks)?;
    let version = Auditor::of(&ks).run(
        "CREATE",
        name,
        |v| Some(*v),
        || match ext {
            Some(p) => {
                if ks.body().keys.contains_key(name) {
                    return Err(KeyError::KeyExists(name.into()).into());
                }
                let versions = p.create(name)?;
                let (first, rest) = versions.split_first().expect("a created key has a version");
                ks.create_external_key(name, real_uid(), *first)?;
                for v in rest {
                    ks.add_external_version(name, *v)?;
                }
                Ok(*versions.last().expect("a version"))
            }
            None => {
                ks.create_key(name, real_uid())?;
                Ok(1)
            }
        },
    )?;
    notify_mount(&backing)?;
    println!("created key {name}@{version}");
    Ok(())
}

pub(super) fn roll(name: &str, at: &BackingArg, pass: &PassArgs) -> CliResult {
    let backing = at.resolve()?;
    let mut ks = unlock(&backing, pass)?;
    let v = Auditor::of(&ks).run(
        "ROLL",
        name,
        |v| Some(*v),
        || {
            Ok(if ks.key(name)?.external {
                let p =
                    external(&ks)?.ok_or_else(|| Failure::op("no external key provider is configured"))?;
                let v = p.roll(name, ks.current_version(name)?)?;
                ks.add_external_version(name, v)?;
                v
            } else {
                ks.roll_key(name)?
            })
        },
    )?;
    notify_mount(&backing)?;
    println!("rolled key {name} to version {v}; new files use {name}@{v}");
    Ok(())
}

/// Drops the versions no file uses; fails, naming files, while older versions are
/// still used.
pub(super) fn prune(name: &str, at: &BackingArg, pass: &PassArgs) -> CliResult {
    let backing = at.resolve()?;
    let mut ks = unlock(&backing, pass)?;
    ks.key(name)?;
    let usage = scan_usage(
        &backing,
        &ks.body()
            .zones
            .values()
            .map(|z| z.path.clone())
            .collect::<Vec<_>>(),
    );
    if usage.unreadable > 0 {
        eprintln!(
            "ezfs: warning: {} file(s) in zones have unreadable headers (see 'ezfs fsck'); \
             their key versions are unknown",
            usage.unreadable
        );
    }
    let dropped = Auditor::of(&ks).run(
        "PRUNE",
        name,
        |_| None,
        || Ok(ks.prune_key(name, &|v| usage.files(name, v) > 0)?),
    )?;
    retire_in_kms(&ks, name, &dropped)?;
    notify_mount(&backing)?;
    let current = ks.current_version(name)?;
    if dropped.is_empty() {
        println!("nothing to prune: every version of {name} is in use or the newest");
    } else {
        let list: Vec<String> = dropped.iter().map(|v| format!("{name}@{v}")).collect();
        println!("pruned {}", list.join(", "));
    }
    let still: Vec<u32> = ks
        .key(name)?
        .versions
        .iter()
        .map(|v| v.version)
        .filter(|&v| v != current)
        .collect();
    if !still.is_empty() {
        for v in &still {
            for zone in ks.body().zones_whose_names_need(name, *v) {
                eprintln!(
                    "ezfs: {name}@{v} wraps the file-name secret of zone {zone} (backing path); \
                     'ezfs zone reencrypt' on it re-wraps that"
                );
            }
            let ex = usage
                .examples
                .get(name)
                .and_then(|m| m.get(v))
                .cloned()
                .unwrap_or_default();
            let n = usage.files(name, *v);
            if n == 0 {
                continue;
            }
            eprintln!(
                "ezfs: {name}@{v} is still used by {n} file(s): /{}{}",
                ex.join(", /"),
                if n > ex.len() as u64 {
                    format!(", … ('ezfs zone files ZONE --version {v}' lists them all)")
                } else {
                    String::new()
                }
            );
        }
        return Err(Failure::op(format!(
            "kept {} version(s) of {name} that files or file-name secrets still use; run 'ezfs zone reencrypt' on their zones first",
            still.len()
        )));
    }
    Ok(())
}

pub(super) fn delete(name: &str, at: &BackingArg, pass: &PassArgs) -> CliResult {
    let backing = at.resolve()?;
    let mut ks = unlock(&backing, pass)?;
    let entry = ks.key(name)?.clone();
    Auditor::of(&ks).run("DELETE", name, |_| None, || Ok(ks.delete_key(name)?))?;
    notify_mount(&backing)?;
    if entry.external {
        let versions: Vec<u32> = entry.versions.iter().map(|v| v.version).collect();
        retire_in_kms(&ks, name, &versions)?;
    }
    println!("deleted key {name}");
    Ok(())
}

/// Revokes and destroys `versions` of key `name` in the KMS, if a KMS holds it (its
/// material is gone: files still under those versions can never be read again, which
/// is why prune and delete refuse while any is). Audited as DESTROY, one per version.
fn retire_in_kms(ks: &Keystore, name: &str, versions: &[u32]) -> CliResult {
    if !audited(ks) || versions.is_empty() {
        return Ok(());
    }
    let Some(p) = external(ks)? else { return Ok(()) };
    for &v in versions {
        Auditor::of(ks)
            .run("DESTROY", name, |_| Some(v), || Ok(p.retire(name, v)?))
            .map_err(|e| {
                Failure::op(format!(
                    "{name}@{v} is gone from the keystore, but the KMS still holds it: {}",
                    e.msg
                ))
            })?;
    }
    Ok(())
}
