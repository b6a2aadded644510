//! `ezfs init`, `ezfs key …` and `ezfs passwd`: keystore commands. They work whether
//! or not the backing dir is mounted; a running mount is told to reload the keystore.

use super::{mountinfo, CliResult, Failure, PassArgs};
use crate::control::{self, ClientError, Request};
use crate::keys::keystore::{read_body, Body};
use crate::keys::passphrase::{self, Passphrase};
use crate::keys::{KdfParams, Keystore};
use clap::Subcommand;
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum KeyCmd {
    /// Create a zone key (version 1).
    Create {
        name: String,
        #[command(flatten)]
        at: BackingArg,
        #[command(flatten)]
        pass: PassArgs,
    },
    /// Add a new version of a key; new files use it from now on.
    Roll {
        name: String,
        #[command(flatten)]
        at: BackingArg,
        #[command(flatten)]
        pass: PassArgs,
    },
    /// List keys: versions and the zones using each.
    List {
        #[command(flatten)]
        at: BackingArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a key and all its versions (refused while a zone uses it).
    Delete {
        name: String,
        #[command(flatten)]
        at: BackingArg,
        #[command(flatten)]
        pass: PassArgs,
    },
}

/// Which backing dir a key command acts on.
#[derive(clap::Args, Debug, Clone)]
pub struct BackingArg {
    /// The backing directory; default: that of the ezfs mount holding the current directory.
    #[arg(long, value_name = "BACKING")]
    backing: Option<PathBuf>,
}

impl BackingArg {
    fn resolve(&self) -> Result<PathBuf, Failure> {
        if let Some(b) = &self.backing {
            return b
                .canonicalize()
                .map_err(|e| Failure::op(format!("{}: {e}", b.display())));
        }
        let cwd = std::env::current_dir().map_err(Failure::op)?;
        mountinfo::mount_of(&cwd).map(|m| m.backing).ok_or_else(|| {
            Failure::usage("no --backing given and the current directory is not inside an ezfs mount")
        })
    }
}

fn obtain(pass: &PassArgs, what: &str, confirm: bool) -> Result<Passphrase, Failure> {
    passphrase::obtain(pass.passphrase_file.as_deref(), what, confirm).map_err(Failure::op)
}

fn unlock(backing: &Path, pass: &PassArgs) -> Result<Keystore, Failure> {
    // fail early, before prompting, when the directory is not a backing dir
    read_body(backing)?;
    Ok(Keystore::unlock(backing, &obtain(pass, "passphrase", false)?)?)
}

/// Tells a running mount of `backing` (if any) to re-read the keystore.
fn notify_mount(backing: &Path) -> CliResult {
    match control::call(backing, &Request::Reload) {
        Ok(_) | Err(ClientError::NotMounted(_)) => Ok(()),
        Err(e) => Err(Failure::op(format!(
            "the keystore changed, but the running mount did not reload it: {e}"
        ))),
    }
}

pub fn init(backing: &Path, pass: &PassArgs) -> CliResult {
    if !backing.exists() {
        std::fs::create_dir_all(backing)
            .map_err(|e| Failure::op(format!("cannot create {}: {e}", backing.display())))?;
    }
    let pw = obtain(pass, "passphrase", true)?;
    Keystore::init(backing, &pw, KdfParams::default())?;
    println!(
        "initialized {} (keystore in {}/.ezfs)",
        backing.display(),
        backing.display()
    );
    Ok(())
}

fn real_uid() -> u32 {
    // SAFETY: getuid cannot fail.
    unsafe { libc::getuid() }
}

#[derive(Serialize)]
struct KeyView<'a> {
    name: &'a str,
    current_version: u32,
    versions: Vec<VersionView>,
    owner: u32,
    created: u64,
    zones: Vec<String>,
}

#[derive(Serialize)]
struct VersionView {
    version: u32,
    created: u64,
}

fn key_views(body: &Body) -> Vec<KeyView<'_>> {
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
                })
                .collect(),
            owner: k.owner,
            created: k.created,
            zones: body.zones_using(name),
        })
        .collect()
}

pub fn run(cmd: KeyCmd) -> CliResult {
    match cmd {
        KeyCmd::Create { name, at, pass } => {
            let backing = at.resolve()?;
            crate::keys::validate_key_name(&name)?;
            unlock(&backing, &pass)?.create_key(&name, real_uid())?;
            notify_mount(&backing)?;
            println!("created key {name}@1");
        }
        KeyCmd::Roll { name, at, pass } => {
            let backing = at.resolve()?;
            let v = unlock(&backing, &pass)?.roll_key(&name)?;
            notify_mount(&backing)?;
            println!("rolled key {name} to version {v}; new files use {name}@{v}");
        }
        KeyCmd::Delete { name, at, pass } => {
            let backing = at.resolve()?;
            unlock(&backing, &pass)?.delete_key(&name)?;
            notify_mount(&backing)?;
            println!("deleted key {name}");
        }
        KeyCmd::List { at, json } => {
            let body = read_body(&at.resolve()?)?;
            let views = key_views(&body);
            if json {
                println!("{}", serde_json::to_string_pretty(&views).expect("serializes"));
            } else if views.is_empty() {
                println!("no keys");
            } else {
                println!("{:<24} {:>8} {:>8}  ZONES", "KEY", "VERSION", "VERSIONS");
                for k in views {
                    let zones = if k.zones.is_empty() {
                        "-".to_string()
                    } else {
                        k.zones.join(", ")
                    };
                    println!(
                        "{:<24} {:>8} {:>8}  {zones}",
                        k.name,
                        k.current_version,
                        k.versions.len()
                    );
                }
            }
        }
    }
    Ok(())
}

pub fn passwd(backing: &Path, pass: &PassArgs, new_file: Option<&Path>) -> CliResult {
    let mut ks = unlock(backing, pass)?;
    let new = match new_file {
        Some(f) => passphrase::from_file(f).map_err(Failure::op)?,
        None => passphrase::obtain(None, "new passphrase", true).map_err(Failure::op)?,
    };
    ks.change_passphrase(&new)?;
    println!("passphrase changed for {}", backing.display());
    Ok(())
}
