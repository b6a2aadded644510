//! What a re-encryption job does to the file names of a zone that encrypts them.
//!
//! - `zone reencrypt` (re-wrap): the zone's name secret is re-wrapped with the key's
//!   newest version; no name changes (like a file's DEK, the secret stays).
//! - `zone reencrypt --data` (after a compromise): a new secret is made and recorded
//!   in the registry as the *next* one before any file is touched; after the files,
//!   every name of the zone is moved to it, one `renameat2(RENAME_NOREPLACE)` per
//!   entry in its own directory (a symlink first gets its target re-encrypted under
//!   the same name), and then the next secret becomes the current one. Until then the
//!   mount looks names up and lists them under both, and makes new ones under the
//!   next, so a crash or a cancel at any point leaves every entry readable; the
//!   resumed job keeps the same next secret and moves what is left.

use super::core::Core;
use super::dirfiles;
use super::reencrypt::Root;
use super::rekey::JobError;
use crate::backdir::walk::{walk, Kind, Visitor};
use crate::backdir::{resolve, sys};
use crate::format::names::{self as encnames, Stored};
use crate::keys::keystore::NameKeys;
use crate::text::hex;
use crate::zone::walk::has_marker;
use crate::zone::{self, names as znames, Zone};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};

/// One entry whose name (and, for a symlink, target) may need moving.
struct Entry {
    dir: Rc<OwnedFd>,
    name: OsString,
    symlink: bool,
}

/// Collects every entry of a zone, nested zone roots included (their own names are
/// this zone's) but not their contents.
struct Collect(Vec<Entry>);

impl Visitor for Collect {
    type Ctx = Rc<OwnedFd>;

    fn enter(
        &mut self,
        dir: std::os::fd::BorrowedFd<'_>,
        rel: &Path,
        parent: Option<&Rc<OwnedFd>>,
    ) -> Option<Rc<OwnedFd>> {
        if rel == Path::new(crate::fsck::QUARANTINE_DIR) {
            return None; // fsck's, with the names it gave
        }
        if let (Some(parent), Some(name)) = (parent, rel.file_name()) {
            self.0.push(Entry {
                dir: parent.clone(),
                name: name.to_owned(),
                symlink: false,
            });
            if has_marker(dir) {
                return None;
            }
        }
        let own = sys::open_at(dir, OsStr::new("."), libc::O_PATH | libc::O_DIRECTORY, 0).ok()?;
        Some(Rc::new(own))
    }

    fn entry(
        &mut self,
        _: std::os::fd::BorrowedFd<'_>,
        name: &OsStr,
        _: &Path,
        kind: Kind,
        _: u64,
        ctx: &Rc<OwnedFd>,
    ) {
        let b = name.as_bytes();
        if zone::is_housekeeping(b) || (zone::is_reserved(b, false) && !encnames::is_long_entry(b)) {
            return;
        }
        self.0.push(Entry {
            dir: ctx.clone(),
            name: name.to_owned(),
            symlink: kind == Kind::Symlink,
        });
    }
}

impl Core {
    /// Before a job's files: re-wraps the zone's name secret with `version`, or for a
    /// `--data` job records a new next secret (a resumed one keeps its own).
    pub(super) fn names_job_start(&self, zone: &Zone, version: u32, data: bool) -> Result<(), JobError> {
        let id = hex(&zone.id);
        let Some(keys) = self.registry_names(&id) else {
            return Ok(());
        };
        let rewrap = |w| znames::rewrap(&*self.keys, &zone.id, &zone.key, version, w).map_err(fatal);
        let new = if data {
            let next = match &keys.next {
                Some(n) => n.clone(),
                None => znames::new_secret(&*self.keys, &zone.id, &zone.key, version).map_err(fatal)?,
            };
            NameKeys {
                current: keys.current.clone(),
                next: Some(next),
            }
        } else {
            NameKeys {
                current: rewrap(&keys.current)?,
                next: keys.next.as_ref().map(rewrap).transpose()?,
            }
        };
        if new != keys {
            self.keys
                .set_zone_names(&id, Some(new))
                .map_err(|e| fatal(format!("cannot record the file-name secret: {e}")))?;
        }
        Ok(())
    }

    /// After every file of a `--data` job: moves every name of the zone rooted at
    /// `root` to the next secret, then makes it the current one. Returns how many
    /// entries it moved. Any failure stops it (run the job again to finish).
    pub(super) fn names_job_finish(
        &self,
        root: &Root,
        zone: &Zone,
        stop: &AtomicBool,
    ) -> Result<u64, JobError> {
        let id = hex(&zone.id);
        let Some(keys) = self.registry_names(&id) else {
            return Ok(0);
        };
        let Some(next_secret) = keys.next.clone() else {
            return Ok(0);
        };
        let ciphers = self.name_ciphers(zone).map_err(fatal)?;
        let next = ciphers
            .next
            .clone()
            .ok_or_else(|| fatal("the next file-name secret is missing"))?;
        let mut c = Collect(Vec::new());
        walk(root.fd.as_fd(), &mut c);
        let mut moved = 0;
        let fault = fault_after();
        for e in c.0 {
            if stop.load(Ordering::Acquire) || fault == Some(moved) {
                return Err(JobError::Stopped);
            }
            let dir = e.dir.as_fd();
            let Ok(diriv) = dirfiles::read_diriv(dir) else {
                continue; // no name of it can be read: fsck reports it
            };
            let Ok(Some(plain)) = dirfiles::decrypt_entry(dir, &ciphers, &diriv, &e.name) else {
                continue; // no name of this directory: fsck reports it
            };
            if e.symlink {
                self.reencrypt_target(dir, &e.name, &ciphers, &next)
                    .map_err(|err| fatal(format!("symlink target: {err}")))?;
            }
            let to = encnames::stored(encnames::encrypt_name(&next, &diriv, plain.as_bytes()));
            if to.entry().as_bytes() == e.name.as_bytes() {
                continue; // moved already
            }
            if let Stored::Long { entry, encoded } = &to {
                dirfiles::write_sidecar(dir, OsStr::new(entry), encoded).map_err(fatal)?;
            }
            sys::rename_at(dir, &e.name, dir, OsStr::new(to.entry()), libc::RENAME_NOREPLACE)
                .map_err(|err| fatal(format!("cannot move a name: {err}")))?;
            if encnames::is_long_entry(e.name.as_bytes()) {
                dirfiles::remove_sidecar(dir, &e.name);
            }
            moved += 1;
        }
        let _ = resolve::sync_dir(root.fd.as_fd());
        // nested zone roots (or directories above them) may have got new names: the
        // registry follows them by their markers
        if let Err(e) = self.locate_zones() {
            log::error!("zone {id}: finding the zones again after moving names: {e}");
        }
        self.keys
            .set_zone_names(
                &id,
                Some(NameKeys {
                    current: next_secret,
                    next: None,
                }),
            )
            .map_err(|e| fatal(format!("cannot record the file-name secret: {e}")))?;
        Ok(moved)
    }

    /// Re-encrypts the target of symlink `dir/name` under `next` if it is not yet,
    /// replacing the link atomically under the same name.
    fn reencrypt_target(
        &self,
        dir: std::os::fd::BorrowedFd<'_>,
        name: &OsStr,
        ciphers: &znames::NameCiphers,
        next: &crate::crypto::names::NameCipher,
    ) -> io::Result<()> {
        let link = sys::open_at(dir, name, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
        let stored = sys::readlink(link.as_fd())?;
        if encnames::decrypt_target(next, &stored).is_ok() {
            return Ok(());
        }
        let target = encnames::decrypt_target(&ciphers.current, &stored).map_err(io::Error::other)?;
        let tmp = resolve::temp_name();
        let new = encnames::encrypt_target(next, &target);
        sys::symlink_at(OsStr::new(&new), dir, &tmp)?;
        let st = sys::stat_at(link.as_fd(), OsStr::new(""))?;
        // the link keeps its owner
        let kept = sys::open_at(dir, &tmp, libc::O_PATH | libc::O_NOFOLLOW, 0)
            .and_then(|t| sys::chown(t.as_fd(), st.st_uid, st.st_gid))
            .and_then(|()| sys::rename_at(dir, &tmp, dir, name, 0));
        if kept.is_err() {
            let _ = sys::unlink_at(dir, &tmp, 0);
        }
        kept
    }

    /// The zone `id`'s name secrets in the registry, if its names are encrypted.
    fn registry_names(&self, id: &str) -> Option<NameKeys> {
        let mut keys = None;
        self.keys
            .with_registry(&mut |r| keys = r.get(id).and_then(|e| e.names.clone()));
        keys
    }
}

/// A failure that stops the job: names are all or nothing per entry, and the job is
/// run again to finish.
fn fatal(e: impl std::fmt::Display) -> JobError {
    JobError::Fatal(e.to_string())
}

/// For crash tests: `EZFS_FAULT_NAMES_AFTER=N` in the daemon's environment stops the
/// move of names after N entries, as a crash or a cancel there would.
fn fault_after() -> Option<u64> {
    std::env::var("EZFS_FAULT_NAMES_AFTER").ok()?.parse().ok()
}
