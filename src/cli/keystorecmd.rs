//! `ezfs keystore backup` and `ezfs keystore verify`: a copy of the sealed keystore,
//! and a check that a copy opens with the passphrase.

use super::backing::{open_new_secret_file, BackingArg};
use super::{CliResult, Failure, PassArgs};
use crate::keys::keystore::{KEYSTORE_FILE, LOCK_FILE, MAX_KEYSTORE};
use crate::keys::{passphrase, Keystore};
use clap::Subcommand;
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum KeystoreCmd {
    /// Copy the sealed keystore to FILE (a new file, mode 0600). It holds every key
    /// version, sealed by the passphrase (and the recovery key): keep it apart from
    /// the backing dir, and make a new one after every key create, roll or prune.
    Backup {
        file: PathBuf,
        #[command(flatten)]
        at: BackingArg,
    },
    /// Check that FILE (a backup) opens with the passphrase and authenticates; exit 0
    /// if it does.
    Verify {
        file: PathBuf,
        #[command(flatten)]
        pass: PassArgs,
    },
}

pub fn run(cmd: KeystoreCmd) -> CliResult {
    match cmd {
        KeystoreCmd::Backup { file, at } => backup(&at.resolve()?, &file),
        KeystoreCmd::Verify { file, pass } => verify(&file, &pass),
    }
}

fn backup(backing: &Path, file: &Path) -> CliResult {
    crate::keys::keystore::read_body(backing)?;
    let dir = crate::keys::keystore::ezfs_dir(backing);
    // under the keystore's lock: a copy never catches an update half way
    let _lock = crate::keys::atomic::FileLock::acquire(&dir.join(LOCK_FILE))
        .map_err(|e| Failure::op(format!("cannot lock {}: {e}", dir.display())))?;
    let data = crate::keys::atomic::read_file(&dir.join(KEYSTORE_FILE), MAX_KEYSTORE)
        .map_err(|e| Failure::op(format!("cannot read the keystore: {e}")))?;
    let mut f = open_new_secret_file(file)
        .map_err(|e| Failure::op(format!("cannot create {}: {e}", file.display())))?;
    let written = std::io::Write::write_all(&mut f, &data).and_then(|_| f.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(file);
        return Err(Failure::op(format!("cannot write {}: {e}", file.display())));
    }
    println!(
        "keystore of {} copied to {} ({} bytes); check it with 'ezfs keystore verify {}'",
        backing.display(),
        file.display(),
        data.len(),
        file.display()
    );
    Ok(())
}

fn verify(file: &Path, pass: &PassArgs) -> CliResult {
    let pw = passphrase::obtain(pass.passphrase_file.as_deref(), "passphrase", false).map_err(Failure::op)?;
    let body = Keystore::verify_copy(file, &pw)?;
    let versions: usize = body.keys.values().map(|k| k.versions.len()).sum();
    println!(
        "{} is a good keystore: {} key(s), {versions} key version(s), {} zone(s)",
        file.display(),
        body.keys.len(),
        body.zones.len()
    );
    Ok(())
}
