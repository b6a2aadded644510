//! `ezfs fsck`: authenticate every header and every block of every encrypted file,
//! and check the zones against the keystore's registry.
//!
//! Works on the backing dir directly (mounted or not) and only reads, except with
//! quarantine, which moves damaged files into `lost+found` inside their zone: nothing
//! is ever deleted. Root runs it in directories users may write, so it walks on
//! descriptors (see [`crate::backdir::walk`]): it never follows a symlink, never opens
//! anything but regular files, and moves files only between directories it opened
//! itself (`lost+found` included: an existing entry of that name that is not a real
//! directory is refused).
//!
//! Zones are decided as the mount decides them ([`crate::zone::decide`]): a registered
//! root is a zone whatever its marker says (a bad one is reported), a marker the
//! registry does not place there is reported too. A file whose header names another
//! zone or key than the zone it is in is misplaced (the mount gives EIO for it), and
//! so is an encrypted file outside every zone.

use crate::backdir::resolve::{ensure_dir, open_beneath};
use crate::backdir::sys;
use crate::backdir::walk::{walk, Kind, Visitor};
use crate::format::header::{read_header, MAGIC};
use crate::format::layout::{plain_size, HEADER_LEN};
use crate::format::names::DIRIV_LEN;
use crate::format::{Backing, BlockCodec};
use crate::keys::{KeyProvider, LocalProvider};
use crate::text::hex;
use crate::zone::names::NameCiphers;
use crate::zone::{self, MarkerRead, Zone};
use serde::Serialize;
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Where quarantined files go, inside their zone root.
pub const QUARANTINE_DIR: &str = "lost+found";

/// One damaged file.
#[derive(Debug, Clone, Serialize)]
pub struct Damage {
    /// Path relative to the backing dir.
    pub path: String,
    /// What is wrong, one sentence.
    pub problem: String,
    /// Damaged block ranges (inclusive), when the header is fine but blocks are not.
    pub blocks: Vec<(u64, u64)>,
    /// Where the file was moved by quarantine.
    pub quarantined_to: Option<String>,
}

/// What fsck found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Usable zones checked (broken ones are in `zone_problems`).
    pub zones: u64,
    /// Files checked in those zones.
    pub files: u64,
    /// Blocks checked in those files.
    pub blocks: u64,
    /// Files found damaged, and what is wrong with each.
    pub damaged: Vec<Damage>,
    /// Problems with zones themselves (markers, registry).
    pub zone_problems: Vec<String>,
}

impl Report {
    /// Whether nothing was found wrong.
    pub fn is_clean(&self) -> bool {
        self.damaged.is_empty() && self.zone_problems.is_empty()
    }
}

/// Collapses sorted block numbers into inclusive ranges.
fn ranges(blocks: &[u64]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &b in blocks {
        match out.last_mut() {
            Some((_, hi)) if *hi + 1 == b => *hi = b,
            _ => out.push((b, b)),
        }
    }
    out
}

/// What is wrong with a file, and which block ranges.
type Problem = (String, Vec<(u64, u64)>);

/// Opens `dir/name` for reading if it is a regular file.
fn open_file(dir: BorrowedFd<'_>, name: &OsStr) -> std::io::Result<File> {
    crate::zone::usage::open_regular(dir, name)
}

/// Checks one file of `zone`; returns the number of blocks and the damage, if any.
fn check_file(f: &File, zone: &Zone, keys: &LocalProvider) -> (u64, Option<Problem>) {
    let fail = |msg: String| (0, Some((msg, Vec::new())));
    let len = match f.metadata() {
        Ok(m) => m.len(),
        Err(e) => return fail(format!("cannot stat: {e}")),
    };
    if len == 0 {
        return (0, None);
    }
    let Ok(size) = plain_size(len) else {
        return fail(format!("backing size {len} is too short for a header"));
    };
    let header = match read_header(f) {
        Ok(h) => h,
        Err(e) => return fail(e),
    };
    if header.zone_id != zone.id || header.key_name != zone.key {
        return fail(format!(
            "misplaced: its header names zone {} (key {}), not this zone ({}, key {}); the mount \
             gives EIO for it",
            hex(&header.zone_id),
            header.key_name,
            hex(&zone.id),
            zone.key
        ));
    }
    // through the provider: keystore keys, an exec: program's or the KMS's alike
    let dek = match crate::keys::dek::unwrap(keys, &header) {
        Ok(dek) => dek,
        Err(crate::keys::KeyError::Unwrap(..)) => return fail("header authentication failed".into()),
        Err(e) => return fail(format!("{e} (key {}@{})", header.key_name, header.key_version)),
    };
    let codec = BlockCodec::new(&dek, header.file_id);
    let blocks = crate::format::layout::block_count(size);
    let padding = match BlockCodec::bad_padding(f, size) {
        Ok(p) => p,
        Err(e) => return (blocks, Some((format!("read error: {e}"), Vec::new()))),
    };
    match codec.verify(f, size) {
        Ok(bad) if bad.is_empty() && padding.is_empty() => (blocks, None),
        Ok(bad) if bad.is_empty() => (
            blocks,
            Some((
                format!(
                    "the padding of metadata block(s) {} is not zero",
                    padding.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
                ),
                Vec::new(),
            )),
        ),
        Ok(bad) => (
            blocks,
            Some((
                format!("{} block(s) fail authentication", bad.len()),
                ranges(&bad),
            )),
        ),
        Err(e) => (blocks, Some((format!("read error: {e}"), Vec::new()))),
    }
}

/// Whether the regular file `f` starts like an encrypted file.
fn looks_encrypted(f: &File) -> bool {
    let mut magic = [0u8; 8];
    f.metadata().is_ok_and(|m| m.len() >= HEADER_LEN)
        && Backing::read_at(f, &mut magic, 0).is_ok_and(|n| n == magic.len())
        && &magic == MAGIC
}

/// Moves `dir/name` (at `rel` from the backing root) into `lost+found` of the zone
/// root `root`, under a name that says where it was; returns the new path from the
/// zone root.
fn quarantine(
    root: BorrowedFd<'_>,
    dir: BorrowedFd<'_>,
    name: &OsStr,
    rel: &Path,
) -> std::io::Result<PathBuf> {
    let lf = ensure_dir(root, OsStr::new(QUARANTINE_DIR), 0o700)?;
    let base = rel.to_string_lossy().replace('/', "_");
    for n in 0u32.. {
        let target: OsString = if n == 0 {
            base.clone().into()
        } else {
            format!("{base}.{n}").into()
        };
        match sys::rename_at(dir, name, lf.as_fd(), &target, libc::RENAME_NOREPLACE) {
            Ok(()) => return Ok(Path::new(QUARANTINE_DIR).join(target)),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => continue,
            Err(e) => return Err(e),
        }
    }
    unreachable!("some name is free")
}

/// A directory's zone during the walk: the zone, its root's path and descriptor, and
/// in a zone whose names are encrypted, the name ciphers and this directory's diriv.
#[derive(Clone)]
struct InZone {
    zone: Rc<Zone>,
    root_rel: PathBuf,
    root: Rc<OwnedFd>,
    names: Option<(Rc<NameCiphers>, Option<[u8; DIRIV_LEN]>)>,
}

/// The name ciphers of `zone`, unwrapped through the provider.
fn name_ciphers(zone: &Zone, keys: &dyn KeyProvider) -> Result<Option<NameCiphers>, String> {
    let Some(names) = &zone.names else {
        return Ok(None);
    };
    NameCiphers::unwrap(keys, &zone.id, &zone.key, names)
        .map(Some)
        .map_err(|e| format!("its name secret does not unwrap with key {}: {e}", zone.key))
}

struct Checker<'a> {
    keys: &'a LocalProvider,
    /// The zone registry, read once.
    registry: Rc<crate::keys::service::Registry>,
    quarantine: bool,
    progress: &'a mut dyn FnMut(u64),
    report: Report,
    /// Zone ids whose registered root was found, with a usable marker or not.
    seen: BTreeMap<String, String>,
}

impl Visitor for Checker<'_> {
    type Ctx = Option<InZone>;

    fn enter(
        &mut self,
        dir: BorrowedFd<'_>,
        rel: &Path,
        parent: Option<&Option<InZone>>,
    ) -> Option<Option<InZone>> {
        if rel == Path::new(crate::EZFS_DIR) {
            return None;
        }
        if let Some(Some(z)) = parent {
            if rel == z.root_rel.join(QUARANTINE_DIR) {
                return None;
            }
        }
        let registry = Rc::clone(&self.registry);
        let rel_s = rel.to_string_lossy();
        let here = registry
            .iter()
            .find(|(_, z)| z.path == rel_s)
            .map(|(id, z)| (id.as_str(), z));
        let marker = zone::marker::read_marker(dir, &self.keys.store().read().marker_keys());
        let invalid = matches!(marker, MarkerRead::Invalid(_));
        let Some(z) = zone::decide(marker, here, |id| registry.contains_key(id)) else {
            let mut ctx = parent.cloned().flatten();
            if let Some(z) = &mut ctx {
                if !self.name_checked_dir(dir, rel, z) {
                    return None;
                }
                if let Some((_, diriv)) = &mut z.names {
                    *diriv = self.diriv_of(dir, rel);
                }
            }
            return Some(ctx);
        };
        if let Some(Some(p)) = parent {
            // a nested zone root's own name is its parent zone's
            if !self.name_checked_dir(dir, rel, &mut p.clone()) {
                return None;
            }
        }
        if let Some((id, _)) = here {
            self.seen.insert(id.to_owned(), rel_s.to_string());
        }
        match &z.broken {
            None => self.report.zones += 1,
            Some(why) => {
                let fix = if invalid || here.is_some() {
                    format!("; 'ezfs zone repair /{rel_s}' writes it again")
                } else {
                    String::new()
                };
                self.report.zone_problems.push(format!("/{rel_s}: {why}{fix}"));
            }
        }
        let root = sys::open_at(dir, OsStr::new("."), libc::O_PATH | libc::O_DIRECTORY, 0).ok()?;
        let names = match name_ciphers(&z, self.keys) {
            Ok(n) => n.map(|c| (Rc::new(c), self.diriv_of(dir, rel))),
            Err(why) => {
                self.report
                    .zone_problems
                    .push(format!("/{rel_s}: file names cannot be checked: {why}"));
                None
            }
        };
        Some(Some(InZone {
            zone: Rc::new(z),
            root_rel: rel.to_path_buf(),
            root: Rc::new(root),
            names,
        }))
    }

    fn entry(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        rel: &Path,
        kind: Kind,
        _: u64,
        ctx: &Option<InZone>,
    ) {
        let b = name.as_encoded_bytes();
        if zone::is_housekeeping(b) || zone::is_rekey_temp(b) || crate::backdir::resolve::is_temp(b) {
            return;
        }
        if let Some(z) = ctx {
            if let Some(why) = self.bad_name(dir, name, z) {
                self.damaged_entry(dir, name, rel, z, why);
                return;
            }
        }
        if kind != Kind::File {
            return;
        }
        let Ok(f) = open_file(dir, name) else {
            return;
        };
        let damage = match ctx {
            None if looks_encrypted(&f) => Some((
                "an encrypted file outside every zone (the mount gives EIO for it)".to_string(),
                Vec::new(),
            )),
            None => return,
            // a broken zone: its problem is reported once, for the zone
            Some(z) if z.zone.broken.is_some() => return,
            Some(z) => {
                self.report.files += 1;
                let (blocks, damage) = check_file(&f, &z.zone, self.keys);
                self.report.blocks += blocks;
                damage
            }
        };
        drop(f);
        if let Some((problem, blocks)) = damage {
            self.record(dir, name, rel, ctx.as_ref(), problem, blocks);
        }
        (self.progress)(self.report.files);
    }

    fn failed(&mut self, rel: &Path, e: &std::io::Error) {
        self.report
            .zone_problems
            .push(format!("/{}: cannot list directory: {e}", rel.display()));
    }
}

impl Checker<'_> {
    /// The diriv of directory `dir` of a name-encrypted zone; a missing or bad one is
    /// reported (none of the directory's names can be read then).
    fn diriv_of(&mut self, dir: BorrowedFd<'_>, rel: &Path) -> Option<[u8; DIRIV_LEN]> {
        match crate::fs::dirfiles::read_diriv(dir) {
            Ok(d) => Some(d),
            Err(why) => {
                self.report.zone_problems.push(format!(
                    "/{}: {why}; the names in it cannot be read",
                    rel.display()
                ));
                None
            }
        }
    }

    /// Why the entry `name` of `dir` in zone context `z` is no name of its directory
    /// (`None`: it is one, or names are not encrypted there, or the filesystem keeps
    /// it there).
    fn bad_name(&self, dir: BorrowedFd<'_>, name: &OsStr, z: &InZone) -> Option<String> {
        let (ciphers, diriv) = z.names.as_ref()?;
        let diriv = diriv.as_ref()?;
        crate::fs::dirfiles::decrypt_entry(dir, ciphers, diriv, name)
            .err()
            .map(|e| e.to_string())
    }

    /// Checks the name of directory `dir` (at `rel`) in its parent's zone context
    /// `parent`; false if it is damaged (reported, and quarantined if asked: then it
    /// is not walked).
    fn name_checked_dir(&mut self, dir: BorrowedFd<'_>, rel: &Path, parent: &mut InZone) -> bool {
        let (Some(name), Ok(up)) = (
            rel.file_name(),
            sys::open_at(dir, OsStr::new(".."), libc::O_PATH | libc::O_DIRECTORY, 0),
        ) else {
            return true;
        };
        match self.bad_name(up.as_fd(), name, parent) {
            None => true,
            Some(why) => {
                self.damaged_entry(up.as_fd(), name, rel, parent, why);
                !self.quarantine
            }
        }
    }

    /// Reports the entry `name` of `dir` (at `rel`) whose name does not decrypt, and
    /// quarantines it if asked.
    fn damaged_entry(&mut self, dir: BorrowedFd<'_>, name: &OsStr, rel: &Path, z: &InZone, why: String) {
        let problem = format!("name: {why} (the mount does not list it)");
        self.record(dir, name, rel, Some(z), problem, Vec::new());
    }

    /// Records the damaged entry `name` of `dir` (at `rel`), moving it into its zone's
    /// `lost+found` if asked (and in a zone).
    fn record(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        rel: &Path,
        z: Option<&InZone>,
        problem: String,
        blocks: Vec<(u64, u64)>,
    ) {
        let quarantined_to = match z {
            Some(z) if self.quarantine => match quarantine(z.root.as_fd(), dir, name, rel) {
                Ok(t) => Some(z.root_rel.join(t).to_string_lossy().into_owned()),
                Err(e) => {
                    self.report
                        .zone_problems
                        .push(format!("/{}: quarantine failed: {e}", rel.display()));
                    None
                }
            },
            _ => None,
        };
        self.report.damaged.push(Damage {
            path: rel.to_string_lossy().into_owned(),
            problem,
            blocks,
            quarantined_to,
        });
    }
}

/// Walks the backing dir. `progress(done_files)` is called after each file.
pub fn check(
    backing: &Path,
    keys: &LocalProvider,
    quarantine_damaged: bool,
    progress: &mut dyn FnMut(u64),
) -> Report {
    let registry = keys.store().read().body().zones.clone();
    let mut c = Checker {
        keys,
        registry: Rc::new(registry.clone()),
        quarantine: quarantine_damaged,
        progress,
        report: Report::default(),
        seen: BTreeMap::new(),
    };
    match sys::open_at(
        sys::at_cwd(),
        backing.as_os_str(),
        libc::O_PATH | libc::O_DIRECTORY,
        0,
    ) {
        Ok(root) => {
            walk(root.as_fd(), &mut c);
            // a registered zone whose path leads nowhere (or through a symlink)
            for (id, z) in &registry {
                if c.seen.contains_key(id) {
                    continue;
                }
                let at = open_beneath(
                    root.as_fd(),
                    Path::new(&z.path),
                    libc::O_PATH | libc::O_DIRECTORY,
                    false,
                );
                let why = if at.is_ok() {
                    "is not walked (under .ezfs or lost+found?)"
                } else {
                    "has no directory at its registered path"
                };
                c.report.zone_problems.push(format!(
                    "zone {id} (key {}, last seen at /{}) {why}; if it was moved, 'ezfs zone repair --id {id} \
                     PATH' puts it back; if it was deleted, 'ezfs zone forget {id}'",
                    z.key, z.path
                ));
            }
        }
        Err(e) => c.report.zone_problems.push(format!("{}: {e}", backing.display())),
    }
    c.report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_ranges() {
        assert_eq!(ranges(&[]), vec![]);
        assert_eq!(ranges(&[1, 2, 3, 7, 9, 10]), vec![(1, 3), (7, 7), (9, 10)]);
    }
}
