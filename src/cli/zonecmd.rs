//! `ezfs zone …`: requests to the mount that holds the given path.

use super::{mountinfo, CliResult, Failure};
use crate::control::{self, Request};
use crate::fs::zones::{PathInfo, ZoneSummary};
use clap::Subcommand;
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum ZoneCmd {
    /// Make an existing empty directory in a mount an encryption zone.
    Create {
        /// The zone key's name.
        #[arg(long, value_name = "NAME")]
        key: String,
        dir: PathBuf,
    },
    /// List every zone of a mount: path, key, file count.
    List {
        mountpoint: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show how a file or directory is encrypted: zone, key@version, cipher suite, EDEK, file id.
    Info {
        path: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// The mount holding `path` and `path` relative to its root.
fn locate(path: &Path) -> Result<(mountinfo::EzMount, String), Failure> {
    let canon = path
        .canonicalize()
        .map_err(|e| Failure::op(format!("{}: {e}", path.display())))?;
    let m = mountinfo::mount_of(&canon)
        .ok_or_else(|| Failure::op(format!("{} is not inside an ezfs mount", path.display())))?;
    let rel = canon
        .strip_prefix(&m.mountpoint)
        .unwrap_or(Path::new(""))
        .to_string_lossy()
        .into_owned();
    Ok((m, rel))
}

fn shown(m: &mountinfo::EzMount, rel: &str) -> String {
    m.mountpoint
        .join(rel.trim_start_matches('/'))
        .display()
        .to_string()
}

pub fn run(cmd: ZoneCmd) -> CliResult {
    match cmd {
        ZoneCmd::Create { key, dir } => {
            let (m, rel) = locate(&dir)?;
            let v = control::call(&m.backing, &Request::ZoneCreate { path: rel, key })?;
            let z: ZoneSummary = serde_json::from_value(v).map_err(Failure::op)?;
            println!(
                "created encryption zone {} with key {}@{}",
                shown(&m, &z.path),
                z.key,
                z.key_version
            );
        }
        ZoneCmd::List { mountpoint, json } => {
            let (m, _) = locate(&mountpoint)?;
            let v = control::call(&m.backing, &Request::ZoneList)?;
            let mut zones: Vec<ZoneSummary> = serde_json::from_value(v).map_err(Failure::op)?;
            for z in &mut zones {
                z.path = shown(&m, &z.path);
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&zones).expect("serializes"));
            } else if zones.is_empty() {
                println!("no encryption zones");
            } else {
                println!("{:<40} {:<20} {:>8}", "ZONE", "KEY", "FILES");
                for z in zones {
                    println!(
                        "{:<40} {:<20} {:>8}",
                        z.path,
                        format!("{}@{}", z.key, z.key_version),
                        z.files
                    );
                }
            }
        }
        ZoneCmd::Info { path, json } => {
            let (m, rel) = locate(&path)?;
            let v = control::call(&m.backing, &Request::ZoneInfo { path: rel })?;
            let mut i: PathInfo = serde_json::from_value(v).map_err(Failure::op)?;
            i.path = shown(&m, &i.path);
            i.zone = shown(&m, &i.zone);
            if json {
                println!("{}", serde_json::to_string_pretty(&i).expect("serializes"));
            } else {
                println!("path:         {}", i.path);
                println!("zone:         {} (id {})", i.zone, i.zone_id);
                println!("key:          {}@{}", i.key, i.key_version);
                println!("cipher suite: {}", i.cipher_suite);
                if let (Some(edek), Some(id)) = (&i.edek, &i.file_id) {
                    println!("file id:      {id}");
                    println!("EDEK:         {edek}");
                }
            }
        }
    }
    Ok(())
}
