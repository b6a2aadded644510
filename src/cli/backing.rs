//! Reaching a backing dir's keystore from the command line: which backing dir, the
//! passphrase, unlocking, the authenticated public part, the key versions files use,
//! and telling a running mount that the keystore changed. Shared by the key, zone and
//! keystore commands.

use super::{mountinfo, CliResult, Failure, PassArgs};
use crate::control::{self, ClientError, Request};
use crate::keys::keystore::{read_body, Body};
use crate::keys::passphrase::{self, Passphrase};
use crate::keys::Keystore;
use crate::zone::usage::{self, Usage};
use std::path::{Path, PathBuf};

/// Which backing dir a key command acts on.
#[derive(clap::Args, Debug, Clone)]
pub struct BackingArg {
    /// The backing directory; default: that of the ezfs mount holding the current directory.
    #[arg(long, value_name = "BACKING")]
    backing: Option<PathBuf>,
}

impl BackingArg {
    pub(super) fn resolve(&self) -> Result<PathBuf, Failure> {
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

/// The passphrase (`what` names it in a prompt; `confirm` asks twice).
pub(super) fn obtain(pass: &PassArgs, what: &str, confirm: bool) -> Result<Passphrase, Failure> {
    passphrase::obtain(pass.passphrase_file.as_deref(), what, confirm).map_err(Failure::op)
}

/// Unlocks the keystore of `backing`, asking for the passphrase only once `backing` is
/// known to be a backing dir.
pub(super) fn unlock(backing: &Path, pass: &PassArgs) -> Result<Keystore, Failure> {
    // fail early, before prompting, when the directory is not a backing dir
    read_body(backing)?;
    Ok(Keystore::unlock(backing, &obtain(pass, "passphrase", false)?)?)
}

/// The keystore's public part, authenticated: as the running mount authenticated it,
/// else unlocked here with the passphrase (its MAC is checked with the master key). An
/// edited keystore (an ACL added by hand, say) is never shown as real.
pub(super) fn authentic_body(backing: &Path, pass: &PassArgs) -> Result<Body, Failure> {
    read_body(backing)?;
    match control::call(backing, &Request::KeyList) {
        Ok(v) => return serde_json::from_value(v).map_err(Failure::op),
        Err(ClientError::NotMounted(_)) => {}
        Err(e @ ClientError::Impostor(..)) => eprintln!("ezfs: warning: {e}"),
        Err(e) => return Err(Failure::op(e)),
    }
    Ok(unlock(backing, pass)?.body().clone())
}

/// Which key versions the files of the backing dir's zones use.
pub(super) fn scan_usage(backing: &Path, registered: &[String]) -> Usage {
    match crate::backdir::sys::open_at(
        crate::backdir::sys::at_cwd(),
        backing.as_os_str(),
        libc::O_PATH | libc::O_DIRECTORY,
        0,
    ) {
        Ok(root) => usage::scan(std::os::fd::AsFd::as_fd(&root), registered),
        Err(_) => Usage::default(),
    }
}

/// Tells a running mount of `backing` (if any) to re-read the keystore.
pub(super) fn notify_mount(backing: &Path) -> CliResult {
    match control::call(backing, &Request::Reload) {
        Ok(_) | Err(ClientError::NotMounted(_)) => Ok(()),
        Err(e @ ClientError::Impostor(..)) => {
            eprintln!("ezfs: warning: {e}");
            Ok(())
        }
        Err(e) => Err(Failure::op(format!(
            "the keystore changed, but the running mount did not reload it: {e}"
        ))),
    }
}

/// Creates `path` for a secret (mode 0600): never an existing file, never through a
/// link.
pub(super) fn open_new_secret_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}
