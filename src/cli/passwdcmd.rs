//! `ezfs passwd`: a new passphrase (with the current one, or with the recovery key when
//! it was lost), or with `--rotate-master` a new master key, after which every zone
//! marker is authenticated again.

use super::backing::obtain;
use super::{CliResult, Failure, PassArgs};
use crate::control;
use crate::keys::keystore::read_body;
use crate::keys::passphrase;
use crate::keys::Keystore;
use std::path::Path;

pub fn passwd(backing: &Path, pass: &PassArgs, new_file: Option<&Path>, rotate: bool) -> CliResult {
    read_body(backing)?;
    if rotate {
        // the daemon holds the master key and checks the keystore with it
        if let control::Probe::Daemon(m) = control::probe(backing) {
            return Err(Failure::op(format!(
                "{} is mounted at {}; unmount it before rotating the master key",
                backing.display(),
                m.mountpoint.display()
            )));
        }
    }
    let old = obtain(pass, "passphrase", false)?;
    let mut ks = Keystore::unlock(backing, &old)?;
    let new = match (new_file, rotate) {
        (None, true) => None,
        _ => Some(passphrase::obtain_new(new_file).map_err(Failure::op)?),
    };
    if !rotate {
        let new = new.expect("asked for");
        if *new == *old {
            return Err(Failure::op(
                "the new passphrase is the same as the current one; nothing changed",
            ));
        }
        ks.change_passphrase(&new)?;
        println!("passphrase changed for {}", backing.display());
        return Ok(());
    }
    if !ks.rotating() {
        ks.rotate_master(new.as_deref().map_or(&old[..], |n| &n[..]))?;
    }
    let (done, skipped) = reauthenticate_markers(backing, &ks)?;
    for s in &skipped {
        eprintln!("ezfs: warning: {s}");
    }
    ks.finish_rotation()?;
    println!(
        "master key rotated for {}: {} key version(s) sealed again, {done} zone marker(s) authenticated again{}",
        backing.display(),
        ks.body().keys.values().filter(|k| !k.external).map(|k| k.versions.len()).sum::<usize>(),
        if new.is_some() { "; passphrase changed" } else { "" }
    );
    Ok(())
}

/// `passwd --recovery-key-file`: opens the keystore with the recovery key (the
/// passphrase was lost) and sets a new passphrase.
pub fn passwd_recovered(backing: &Path, rk_file: &Path, new_file: Option<&Path>) -> CliResult {
    read_body(backing)?;
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(rk_file).map_err(|e| {
        Failure::op(format!(
            "cannot read the recovery key file {}: {e}",
            rk_file.display()
        ))
    })?);
    let rk = crate::keys::recovery::parse_key(&text).ok_or_else(|| {
        Failure::op(format!(
            "{} holds no recovery key (64 hex digits)",
            rk_file.display()
        ))
    })?;
    let mut ks = Keystore::unlock_with_recovery(backing, &rk)?;
    if ks.rotating() {
        return Err(Failure::op(
            "a master-key rotation is under way; finish it with the passphrase first",
        ));
    }
    let new = passphrase::obtain_new(new_file).map_err(Failure::op)?;
    ks.change_passphrase(&new)?;
    println!("passphrase set for {} with the recovery key", backing.display());
    Ok(())
}

/// Writes every registered zone's marker again with the current master key's MAC;
/// returns how many, and the zones left alone (no authentic marker where the registry
/// says: see 'ezfs zone repair').
fn reauthenticate_markers(backing: &Path, ks: &Keystore) -> Result<(usize, Vec<String>), Failure> {
    use crate::backdir::{resolve, sys};
    use crate::zone::{MarkerRead, MARKER_FILE};
    use std::os::fd::AsFd;
    let root = sys::open_at(
        sys::at_cwd(),
        backing.as_os_str(),
        libc::O_PATH | libc::O_DIRECTORY,
        0,
    )
    .map_err(|e| Failure::op(format!("{}: {e}", backing.display())))?;
    let (mut done, mut skipped) = (0, Vec::new());
    for (id, z) in &ks.body().zones {
        let dir = resolve::open_beneath(
            root.as_fd(),
            Path::new(&z.path),
            libc::O_PATH | libc::O_DIRECTORY,
            false,
        );
        let marker = dir
            .as_ref()
            .ok()
            .map(|d| crate::zone::marker::read_marker(d.as_fd(), &ks.marker_keys()));
        match (dir, marker) {
            (Ok(d), Some(MarkerRead::Valid(m))) if &m.id_hex() == id => {
                resolve::replace_at(
                    d.as_fd(),
                    std::ffi::OsStr::new(MARKER_FILE),
                    &m.encode(ks.master()),
                    0o644,
                )
                .map_err(|e| Failure::op(format!("/{}: cannot write the zone marker: {e}", z.path)))?;
                done += 1;
            }
            _ => skipped.push(format!(
                "zone /{} ({id}) has no authentic marker where the registry says; 'ezfs zone repair /{}' \
                 writes one under the new master key",
                z.path, z.path
            )),
        }
    }
    Ok((done, skipped))
}
