//! `ezfs key create|roll|prune|delete`: a key's life, in the local keystore or, for
//! keys it holds, through the external key provider (whose versions the keystore
//! records).

use super::super::backing::{notify_mount, scan_usage, unlock, BackingArg};
use super::super::{CliResult, Failure, PassArgs};
use crate::keys::exec::ExecProvider;
use crate::keys::{KeyError, Keystore};

fn real_uid() -> u32 {
    // SAFETY: getuid cannot fail.
    unsafe { libc::getuid() }
}

/// The external key provider, when the keystore names one.
fn external(ks: &Keystore) -> Result<Option<ExecProvider>, Failure> {
    Ok(ks
        .body()
        .provider
        .as_deref()
        .map(ExecProvider::from_setting)
        .transpose()?)
}

pub(super) fn create(name: &str, at: &BackingArg, pass: &PassArgs) -> CliResult {
    let backing = at.resolve()?;
    crate::keys::validate_key_name(name)?;
    let mut ks = unlock(&backing, pass)?;
    let version = match external(&ks)? {
        Some(p) => {
            if ks.body().keys.contains_key(name) {
                return Err(KeyError::KeyExists(name.into()).into());
            }
            let v = p.create(name)?;
            ks.create_external_key(name, real_uid(), v)?;
            v
        }
        None => {
            ks.create_key(name, real_uid())?;
            1
        }
    };
    notify_mount(&backing)?;
    println!("created key {name}@{version}");
    Ok(())
}

pub(super) fn roll(name: &str, at: &BackingArg, pass: &PassArgs) -> CliResult {
    let backing = at.resolve()?;
    let mut ks = unlock(&backing, pass)?;
    let v = if ks.key(name)?.external {
        let p = external(&ks)?.ok_or_else(|| Failure::op("no external key provider is configured"))?;
        let v = p.roll(name)?;
        ks.add_external_version(name, v)?;
        v
    } else {
        ks.roll_key(name)?
    };
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
    let dropped = ks.prune_key(name, &|v| usage.files(name, v) > 0)?;
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
    unlock(&backing, pass)?.delete_key(name)?;
    notify_mount(&backing)?;
    println!("deleted key {name}");
    Ok(())
}
