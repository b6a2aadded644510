//! `ezfs key …`: zone-key commands. They work whether or not the backing dir is
//! mounted; a running mount is told to reload the keystore. Each job has its file:
//! `lifecycle` (create, roll, prune, delete), `acl` (grant, revoke, show), `list`.

mod acl;
mod lifecycle;
mod list;

use super::backing::BackingArg;
use super::{CliResult, PassArgs};
use acl::WhoArg;
use clap::Subcommand;

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
    /// List keys: versions and the zones using each (from the running mount, which
    /// authenticated the keystore; otherwise the passphrase is asked for).
    List {
        #[command(flatten)]
        at: BackingArg,
        #[command(flatten)]
        pass: PassArgs,
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
    /// Drop the versions of a key that no file uses any more (the newest always stays).
    Prune {
        name: String,
        #[command(flatten)]
        at: BackingArg,
        #[command(flatten)]
        pass: PassArgs,
    },
    /// Let a user or group open files in the zones of a key.
    Grant {
        name: String,
        #[command(flatten)]
        who: WhoArg,
        #[command(flatten)]
        at: BackingArg,
        #[command(flatten)]
        pass: PassArgs,
    },
    /// Take back a grant.
    Revoke {
        name: String,
        #[command(flatten)]
        who: WhoArg,
        #[command(flatten)]
        at: BackingArg,
        #[command(flatten)]
        pass: PassArgs,
    },
    /// Show who may use a key: its owner, root, and the users and groups granted.
    Acl {
        name: String,
        #[command(flatten)]
        at: BackingArg,
        #[command(flatten)]
        pass: PassArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: KeyCmd) -> CliResult {
    match cmd {
        KeyCmd::Create { name, at, pass } => lifecycle::create(&name, &at, &pass),
        KeyCmd::Roll { name, at, pass } => lifecycle::roll(&name, &at, &pass),
        KeyCmd::Prune { name, at, pass } => lifecycle::prune(&name, &at, &pass),
        KeyCmd::Delete { name, at, pass } => lifecycle::delete(&name, &at, &pass),
        KeyCmd::Grant { name, who, at, pass } => acl::change(&name, &who, &at, &pass, true),
        KeyCmd::Revoke { name, who, at, pass } => acl::change(&name, &who, &at, &pass, false),
        KeyCmd::Acl { name, at, pass, json } => acl::show(&name, &at, &pass, json),
        KeyCmd::List { at, json, pass } => list::run(&at, &pass, json),
    }
}
