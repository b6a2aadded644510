//! `ezfs key list`: every key, its versions and how many files use each, and the
//! zones using it (as a table or JSON).

use super::super::backing::{authentic_body, scan_usage, BackingArg};
use super::super::{CliResult, PassArgs};
use crate::keys::external::{External, KMIP_PREFIX};
use crate::keys::keystore::Body;
use crate::keys::kms::KmsOptions;
use crate::zone::usage::Usage;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Serialize)]
struct KeyView<'a> {
    name: &'a str,
    current_version: u32,
    versions: Vec<VersionView>,
    owner: u32,
    created: u64,
    /// Held by the external key provider.
    external: bool,
    zones: Vec<ZoneUse>,
}

#[derive(Serialize)]
struct VersionView {
    version: u32,
    created: u64,
    /// Files whose EDEK is wrapped with this version.
    files: u64,
    /// For a key in a KMS: the state of this version there (`Active`, `Deactivated`,
    /// `Destroyed`, `missing`, …); the KMS is the source of truth.
    #[serde(skip_serializing_if = "Option::is_none")]
    kms_state: Option<String>,
}

/// A zone of a key and how many of its files use each version.
#[derive(Serialize)]
struct ZoneUse {
    path: String,
    files_by_version: BTreeMap<u32, u64>,
}

fn key_views<'a>(body: &'a Body, usage: &Usage, kms: Option<&External>) -> Vec<KeyView<'a>> {
    body.keys
        .iter()
        .map(|(name, k)| KeyView {
            name,
            current_version: k.current(),
            versions: k
                .versions
                .iter()
                .map(|v| VersionView {
                    version: v.version,
                    created: v.created,
                    files: usage.files(name, v.version),
                    kms_state: kms.filter(|_| k.external).and_then(|x| x.state(name, v.version)),
                })
                .collect(),
            owner: k.owner,
            created: k.created,
            external: k.external,
            zones: body
                .zones
                .values()
                .filter(|z| &z.key == name)
                .map(|z| ZoneUse {
                    path: format!("/{}", z.path),
                    files_by_version: usage
                        .zones
                        .get(&z.path)
                        .map(|m| {
                            m.iter()
                                .filter_map(|(kv, n)| {
                                    let (k, v) = kv.rsplit_once('@')?;
                                    (k == name).then(|| Some((v.parse().ok()?, *n)))?
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                })
                .collect(),
        })
        .collect()
}

/// "v1: 3 files, v2: 10 files" style summary of a version map.
fn by_version(m: &BTreeMap<u32, u64>) -> String {
    if m.is_empty() {
        return "no files".into();
    }
    m.iter()
        .map(|(v, n)| format!("{n} on @{v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn run(at: &BackingArg, pass: &PassArgs, json: bool) -> CliResult {
    let backing = at.resolve()?;
    let body = authentic_body(&backing, pass)?;
    let usage = scan_usage(
        &backing,
        &body.zones.values().map(|z| z.path.clone()).collect::<Vec<_>>(),
    );
    let kms = match body.provider.as_deref() {
        Some(p) if p.starts_with(KMIP_PREFIX) => {
            let mut options = KmsOptions::default();
            options.pool.size = 0;
            Some(External::from_setting(
                p,
                &crate::keys::keystore::ezfs_dir(&backing),
                &options,
            )?)
        }
        _ => None,
    };
    let views = key_views(&body, &usage, kms.as_ref());
    if json {
        println!("{}", serde_json::to_string_pretty(&views).expect("serializes"));
    } else if views.is_empty() {
        println!("no keys");
    } else {
        println!(
            "{:<20} {:>7}  {:<28}  ZONES",
            "KEY", "CURRENT", "FILES BY VERSION"
        );
        for k in views {
            let files: BTreeMap<u32, u64> = k.versions.iter().map(|v| (v.version, v.files)).collect();
            let states: BTreeMap<u32, &str> = k
                .versions
                .iter()
                .filter_map(|v| Some((v.version, v.kms_state.as_deref()?)))
                .filter(|(_, s)| *s != "Active")
                .collect();
            let zones = if k.zones.is_empty() {
                "-".to_string()
            } else {
                k.zones
                    .iter()
                    .map(|z| format!("{} ({})", z.path, by_version(&z.files_by_version)))
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            let versions = files
                .iter()
                .map(|(v, n)| match states.get(v) {
                    Some(s) => format!("@{v}:{n}({s})"),
                    None => format!("@{v}:{n}"),
                })
                .collect::<Vec<_>>()
                .join(" ");
            println!(
                "{:<20} {:>7}  {:<28}  {zones}",
                format!("{}{}", k.name, if k.external { "*" } else { "" }),
                format!("@{}", k.current_version),
                versions
            );
        }
        if body.keys.values().any(|k| k.external) {
            println!(
                "* held by the external key provider {}",
                body.provider.as_deref().unwrap_or("?")
            );
        }
    }
    Ok(())
}
