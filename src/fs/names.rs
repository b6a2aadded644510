//! The one place where a name in the mount becomes a name in the backing dir, and a
//! backing entry becomes a name in the mount.
//!
//! Every operation that turns (directory, name) into a backing location asks
//! `Core::at`, and does its system call through the `At` it gets; every listing
//! goes through `Core::list`; every path from the mount root that a control request
//! names goes through [`Core::resolve_as`] (and [`normalize`]), and every backing
//! path shown to a user through [`shown`]. The names the mount reserves (zone markers,
//! temporary files, diriv files, `.ezfs` at the root) are refused here. In a zone
//! created with `--encrypt-names` a name is stored encrypted (see
//! [`crate::format::names`]); this module and `dirfiles` (the diriv and long-name
//! files) are all that know it.

use super::core::Core;
use super::dirfiles;
use super::error::{errno, FsError, FsResult};
use super::inode::{Inode, ROOT};
use super::types::{DirEntry, FileKind};
use crate::backdir::resolve::{self, open_beneath};
use crate::backdir::{sys, Caller};
use crate::crypto::names::NameCipher;
use crate::format::names::{self as encnames, DIRIV_FILE, DIRIV_LEN};
use crate::keys::keystore::NameKeys;
use crate::zone::names::NameCiphers;
use crate::zone::{self, Zone};
use std::borrow::Cow;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// What a name is looked up for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Use {
    /// A name that should exist: a reserved one does not, as far as the mount goes.
    Existing,
    /// A name to create (or to rename or link to): reserved ones are refused, and a
    /// broken zone takes no new names.
    New,
}

/// An entry of a backing directory, ready for a system call: the directory's
/// descriptor and the name as the backing dir stores it.
pub(super) struct At<'a> {
    dir: BorrowedFd<'a>,
    name: Cow<'a, OsStr>,
    /// In a directory of a name-encrypted zone: what its entries need besides a name.
    enc: Option<EncAt>,
}

/// What an entry in a name-encrypted directory needs besides its stored name.
struct EncAt {
    /// The cipher of symlink targets made here.
    cipher: Arc<NameCipher>,
    /// A long name's whole encoded name, which its sidecar holds.
    long: Option<String>,
}

impl<'a> At<'a> {
    /// A name that already is a backing name: one the filesystem itself uses (a
    /// marker, a temporary file), or one read from the backing dir (a walk, a
    /// descriptor's path). Never transformed again.
    pub fn backing(dir: BorrowedFd<'a>, name: &'a OsStr) -> At<'a> {
        At {
            dir,
            name: Cow::Borrowed(name),
            enc: None,
        }
    }

    /// The name as the backing dir stores it.
    pub fn name(&self) -> &OsStr {
        &self.name
    }

    pub fn stat(&self) -> io::Result<libc::stat> {
        sys::stat_at(self.dir, &self.name)
    }

    /// `openat`; with `O_CREAT`, a long name's sidecar is written first.
    pub fn open(&self, flags: i32, mode: u32) -> io::Result<OwnedFd> {
        if flags & libc::O_CREAT != 0 {
            self.write_sidecar()?;
        }
        sys::open_at(self.dir, &self.name, flags, mode)
    }

    /// An `O_PATH` descriptor of the entry itself (a symlink is not followed).
    pub fn open_path(&self) -> io::Result<OwnedFd> {
        sys::open_at(self.dir, &self.name, libc::O_PATH | libc::O_NOFOLLOW, 0)
    }

    /// `mkdir`; in a name-encrypted zone the directory gets its diriv before its name,
    /// so no one ever sees it without one.
    pub fn mkdir(&self, mode: u32) -> io::Result<()> {
        if self.enc.is_none() {
            return sys::mkdir_at(self.dir, &self.name, mode);
        }
        self.write_sidecar()?;
        let tmp = resolve::temp_name();
        sys::mkdir_at(self.dir, &tmp, mode)?;
        let placed = sys::open_at(
            self.dir,
            &tmp,
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )
        .and_then(|d| dirfiles::write_diriv(d.as_fd()))
        .and_then(|()| sys::rename_at(self.dir, &tmp, self.dir, &self.name, libc::RENAME_NOREPLACE));
        if placed.is_err() {
            if let Ok(d) = sys::open_at(
                self.dir,
                &tmp,
                libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                0,
            ) {
                let _ = sys::unlink_at(d.as_fd(), OsStr::new(DIRIV_FILE), 0);
            }
            let _ = sys::unlink_at(self.dir, &tmp, libc::AT_REMOVEDIR);
        }
        placed
    }

    pub fn mknod(&self, mode: u32, rdev: u64) -> io::Result<()> {
        self.write_sidecar()?;
        sys::mknod_at(self.dir, &self.name, mode, rdev)
    }

    /// `symlink`; in a name-encrypted zone the target is stored encrypted.
    pub fn symlink(&self, target: &OsStr) -> io::Result<()> {
        self.write_sidecar()?;
        match &self.enc {
            None => sys::symlink_at(target, self.dir, &self.name),
            Some(e) => {
                if target.len() > encnames::MAX_TARGET {
                    return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
                }
                let stored = encnames::encrypt_target(&e.cipher, target.as_bytes());
                sys::symlink_at(OsStr::new(&stored), self.dir, &self.name)
            }
        }
    }

    /// Hard-links the file behind the `O_PATH` descriptor `fd` here.
    pub fn link_from(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.write_sidecar()?;
        sys::link_at(fd, self.dir, &self.name)
    }

    pub fn unlink(&self) -> io::Result<()> {
        sys::unlink_at(self.dir, &self.name, 0)?;
        self.remove_sidecar();
        Ok(())
    }

    /// `rmdir`. A directory holding nothing but the files the filesystem keeps in it
    /// (a zone marker, a diriv) loses them first, and gets them back if the rmdir
    /// fails (a file appeared meanwhile).
    pub fn rmdir(&self) -> io::Result<()> {
        let dir = sys::open_at(
            self.dir,
            &self.name,
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )?;
        let kept = dirfiles::take_housekeeping(dir.as_fd())?;
        if let Err(e) = sys::unlink_at(self.dir, &self.name, libc::AT_REMOVEDIR) {
            dirfiles::restore_housekeeping(dir.as_fd(), &kept);
            return Err(e);
        }
        self.remove_sidecar();
        Ok(())
    }

    /// `renameat2` of this entry to `to` (`RENAME_*` flags). A directory `to` that
    /// holds only a diriv is replaced like an empty one.
    pub fn rename_to(&self, to: &At<'_>, flags: u32) -> io::Result<()> {
        to.write_sidecar()?;
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        let mut r = sys::rename_at(self.dir, &self.name, to.dir, &to.name, flags);
        if matches!(&r, Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) || e.raw_os_error() == Some(libc::EEXIST))
            && !exchange
            && flags & libc::RENAME_NOREPLACE == 0
        {
            if let Ok(target) = sys::open_at(
                to.dir,
                &to.name,
                libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                0,
            ) {
                if let Some(kept) = dirfiles::take_diriv_if_alone(target.as_fd()) {
                    r = sys::rename_at(self.dir, &self.name, to.dir, &to.name, flags);
                    if r.is_err() {
                        dirfiles::restore_housekeeping(target.as_fd(), &kept);
                    }
                }
            }
        }
        r?;
        if !exchange && self.name != to.name {
            self.remove_sidecar();
        }
        Ok(())
    }

    fn write_sidecar(&self) -> io::Result<()> {
        match self.enc.as_ref().and_then(|e| e.long.as_ref()) {
            Some(long) => dirfiles::write_sidecar(self.dir, &self.name, long),
            None => Ok(()),
        }
    }

    fn remove_sidecar(&self) {
        if self.enc.as_ref().is_some_and(|e| e.long.is_some()) {
            dirfiles::remove_sidecar(self.dir, &self.name);
        }
    }
}

impl Core {
    /// `name` in directory `parent` (whose descriptor is `dir`) as the backing dir
    /// stores it, checked for `how` it is used: a reserved name is ENOENT when looked
    /// for and EPERM when created; a new name in a broken zone is EIO. In a zone whose
    /// names are encrypted, the name is encrypted here (one AES-SIV operation), and a
    /// long one hashed.
    pub(super) fn at<'a>(
        &self,
        parent: &Inode,
        dir: &'a impl AsFd,
        name: &'a OsStr,
        how: Use,
    ) -> FsResult<At<'a>> {
        if zone::is_reserved(name.as_bytes(), parent.id == ROOT) {
            return Err(match how {
                Use::Existing => errno::ENOENT,
                Use::New => errno::EPERM,
            });
        }
        if name.len() > encnames::MAX_NAME {
            return Err(errno::ENAMETOOLONG);
        }
        let zone = parent.zone();
        if how == Use::New && zone.as_ref().is_some_and(|z| z.broken.is_some()) {
            return Err(errno::EIO);
        }
        let Some(zone) = zone.as_ref().filter(|z| z.names.is_some()) else {
            return Ok(At::backing(dir.as_fd(), name));
        };
        let ciphers = self.name_ciphers(zone)?;
        let diriv = self.diriv(parent, dir.as_fd())?;
        let (cipher, stored) = stored_name(&ciphers, &diriv, dir.as_fd(), name);
        let (entry, long) = match stored {
            encnames::Stored::Short(e) => (e, None),
            encnames::Stored::Long { entry, encoded } => (entry, Some(encoded)),
        };
        Ok(At {
            dir: dir.as_fd(),
            name: Cow::Owned(entry.into()),
            enc: Some(EncAt {
                cipher: cipher.clone(),
                long,
            }),
        })
    }

    /// Whether any zone encrypts names (else mount paths are backing paths).
    fn any_encrypted_names(&self) -> bool {
        let mut any = false;
        self.keys
            .with_registry(&mut |r| any = r.values().any(|z| z.names.is_some()));
        any
    }

    /// Walks the backing path of the mount path `rel` (or, with `to_mount`, the
    /// mount path of the backing path `rel`) from the root as the daemon, through no
    /// symlink, translating each name of a name-encrypted zone.
    fn translate(&self, rel: &Path, to_mount: bool) -> FsResult<PathBuf> {
        if rel.as_os_str().is_empty() || !self.any_encrypted_names() {
            return Ok(rel.to_path_buf());
        }
        let root = self.inode(ROOT)?;
        let mut zone = root.zone();
        let mut dir = sys::open_at(self.root_fd()?.as_fd(), OsStr::new("."), libc::O_PATH, 0)?;
        let mut out = PathBuf::new();
        for c in rel.components() {
            let name = c.as_os_str();
            let (entry, shown) = match zone.as_ref().filter(|z| z.names.is_some()) {
                None => (name.to_owned(), name.to_owned()),
                Some(z) => {
                    let ciphers = self.name_ciphers(z)?;
                    let diriv = dirfiles::read_diriv(dir.as_fd()).map_err(|_| errno::EIO)?;
                    if to_mount {
                        match dirfiles::decrypt_entry(dir.as_fd(), &ciphers, &diriv, name) {
                            Ok(Some(plain)) => (name.to_owned(), plain),
                            _ => return Err(errno::ENOENT),
                        }
                    } else {
                        let stored = stored_name(&ciphers, &diriv, dir.as_fd(), name).1;
                        (stored.entry().into(), name.to_owned())
                    }
                }
            };
            let next = sys::open_at(dir.as_fd(), &entry, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
            let st = sys::stat_at(next.as_fd(), OsStr::new(""))?;
            if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                if let Some(z) = self.dir_zone(next.as_fd(), (st.st_dev, st.st_ino)) {
                    zone = Some(z);
                }
            }
            out.push(if to_mount { shown } else { entry });
            dir = next;
        }
        Ok(out)
    }

    /// The backing path (from the backing root) of the mount path `rel`.
    pub(super) fn backing_rel(&self, rel: &Path) -> FsResult<PathBuf> {
        self.translate(rel, false)
    }

    /// The mount path (from the mount root) of the backing path `rel`, for showing to
    /// users; `rel` itself where it cannot be translated.
    pub fn mount_rel(&self, rel: &Path) -> PathBuf {
        self.translate(rel, true).unwrap_or_else(|_| rel.to_path_buf())
    }

    /// [`Core::resolve_as`] of a backing path (one the registry holds): the mount
    /// path it returns is the translated one.
    pub fn resolve_backing_as(&self, caller: &Caller, rel: &str) -> FsResult<(OwnedFd, PathBuf)> {
        let mount = self.mount_rel(&normalize(rel)?);
        self.resolve_as(caller, &mount.to_string_lossy())
    }

    /// The name ciphers of the name-encrypted zone `zone`, from the registry as it is
    /// now (a `--data` job adds and then promotes a next secret), unwrapped once per
    /// change and kept.
    pub(super) fn name_ciphers(&self, zone: &Zone) -> FsResult<Arc<NameCiphers>> {
        let id = crate::text::hex(&zone.id);
        // the cached ciphers if the registry still holds what they came from (compared
        // in place: nothing is copied on a lookup); else the secrets to unwrap
        let mut found: Result<Arc<NameCiphers>, Option<NameKeys>> = Err(None);
        self.keys.with_registry(&mut |r| {
            let Some(keys) = r.get(&id).and_then(|e| e.names.as_ref()) else {
                return;
            };
            found = match self.name_ciphers.lock().get(&zone.id) {
                Some((k, c)) if k == keys => Ok(c.clone()),
                _ => Err(Some(keys.clone())),
            };
        });
        match found {
            Ok(c) => Ok(c),
            Err(None) => {
                log::error!("zone {id}: the registry holds no file-name secret for it");
                Err(errno::EIO)
            }
            // unwrapped with no lock held: a slow key provider holds up no other zone
            Err(Some(keys)) => {
                let c = Arc::new(NameCiphers::unwrap(&*self.keys, &zone.id, &zone.key, &keys)?);
                self.name_ciphers.lock().insert(zone.id, (keys, c.clone()));
                Ok(c)
            }
        }
    }

    /// The diriv of directory `dir` (descriptor `fd`) of a name-encrypted zone, read
    /// once and kept with its node.
    fn diriv(&self, dir: &Inode, fd: BorrowedFd<'_>) -> FsResult<[u8; DIRIV_LEN]> {
        if let Some(d) = dir.diriv.get() {
            return Ok(*d);
        }
        let d = dirfiles::read_diriv(fd).map_err(|why| {
            log::error!("{}: {why}; its names cannot be read or made", sys::describe(fd));
            errno::EIO
        })?;
        Ok(*dir.diriv.get_or_init(|| d))
    }

    /// The entries of directory `dir` as the mount shows them: "." and "..", then
    /// every backing entry but the reserved ones, under its name in the mount. In a
    /// name-encrypted zone each name is decrypted once; an entry that does not
    /// decrypt (changed, or copied in from elsewhere) is left out, and logged once.
    pub(super) fn list(&self, dir: &Inode) -> FsResult<Vec<DirEntry>> {
        let dot = |name: &str| DirEntry {
            name: name.into(),
            backing: None,
            ino: dir.key.1,
            kind: FileKind::Dir,
        };
        let mut v = vec![dot("."), dot("..")];
        let fd = dir.fd()?;
        let zone = dir.zone();
        let names = match zone.as_ref().filter(|z| z.names.is_some()) {
            Some(z) => Some((self.name_ciphers(z)?, self.diriv(dir, fd.as_fd())?)),
            None => None,
        };
        for (name, ino, d_type) in sys::read_dir(fd.as_fd())? {
            // a long name's hashed entry looks reserved, and is a name of the directory
            let long = names.is_some() && encnames::is_long_entry(name.as_bytes());
            if zone::is_reserved(name.as_bytes(), dir.id == ROOT) && !long {
                continue;
            }
            let (shown, backing) = match &names {
                None => (name, None),
                Some((ciphers, diriv)) => match dirfiles::decrypt_entry(fd.as_fd(), ciphers, diriv, &name) {
                    Ok(Some(shown)) => (shown, Some(name)),
                    Ok(None) => continue,
                    Err(why) => {
                        self.undecryptable(dir, fd.as_fd(), &name, &why);
                        continue;
                    }
                },
            };
            v.push(DirEntry {
                name: shown,
                backing,
                ino,
                kind: FileKind::of_dtype(d_type),
            });
        }
        Ok(v)
    }

    /// Logs, once per entry, a backing entry of a name-encrypted directory that is no
    /// name of it.
    fn undecryptable(&self, dir: &Inode, fd: BorrowedFd<'_>, name: &OsStr, why: &dirfiles::DirFileError) {
        let mut seen = self.undecryptable.lock();
        if seen.len() < 10_000 && seen.insert((dir.key, name.to_owned())) {
            log::warn!(
                "{}/{}: {why}; left out of the listing (see ezfs fsck)",
                sys::describe(fd),
                name.to_string_lossy()
            );
        }
    }

    /// The target of the symlink `ino` as the mount shows it: decrypted in a zone
    /// whose names are encrypted.
    pub(super) fn link_target(&self, ino: &Inode) -> FsResult<Vec<u8>> {
        let stored = sys::readlink(ino.fd()?.as_fd())?;
        let Some(zone) = ino.zone() else {
            return Ok(stored);
        };
        if zone.names.is_none() {
            return Ok(stored);
        }
        let ciphers = self.name_ciphers(&zone)?;
        let plain = encnames::decrypt_target(&ciphers.current, &stored).or_else(|e| {
            ciphers
                .next
                .as_ref()
                .map_or(Err(e), |n| encnames::decrypt_target(n, &stored))
        });
        plain.map_err(|e| {
            log::error!("{}: symlink target {e}", Core::describe(ino));
            errno::EIO
        })
    }

    /// The directory or file at `rel` from the mount root, resolved as `caller` would
    /// through the mount: beneath the backing root, through no symlink, with the
    /// caller's permissions; reserved names (the marker, `.ezfs`) are refused. Returns
    /// its descriptor (`O_PATH`) and its path from the mount root (names in
    /// name-encrypted zones are translated on the way: see `Core::backing_rel`).
    pub fn resolve_as(&self, caller: &Caller, rel: &str) -> FsResult<(OwnedFd, PathBuf)> {
        let rel = normalize(rel)?;
        let shown = shown(&rel);
        // translated as the daemon; where that fails, the untranslated path gets the
        // caller the error the caller's own walk meets (EACCES before ENOENT), so a
        // failed translation tells nothing of directories the caller cannot search
        let backing = self.backing_rel(&rel).unwrap_or_else(|_| rel.clone());
        let (fd, _) = self.resolve_backing_path_as(caller, backing, &shown)?;
        Ok((fd, rel))
    }

    /// Opens the backing path `rel` as `caller` would (see [`Core::resolve_as`]).
    fn resolve_backing_path_as(
        &self,
        caller: &Caller,
        rel: PathBuf,
        shown: &str,
    ) -> FsResult<(OwnedFd, PathBuf)> {
        let root = self.root_fd()?;
        let shown = shown.to_owned();
        let fail = |e: io::Error| match e.raw_os_error() {
            Some(libc::ELOOP) => FsError::SymlinkInPath(shown.clone()),
            Some(libc::EXDEV) => FsError::OutsideMount(shown.clone()),
            _ => FsError::at(&shown)(e),
        };
        // the backing root is private (0700): the mount's root shows its own mode, and
        // that is what the caller is checked against for it
        let mut parts = rel.components();
        let Some(first) = parts.next() else {
            let fd = sys::open_at(root.as_fd(), OsStr::new("."), libc::O_PATH, 0).map_err(fail)?;
            return Ok((fd, rel));
        };
        if !self.root_searchable_by(caller) {
            return Err(fail(io::Error::from_raw_os_error(libc::EACCES)));
        }
        let top = sys::open_at(
            root.as_fd(),
            first.as_os_str(),
            libc::O_PATH | libc::O_NOFOLLOW,
            0,
        )
        .map_err(fail)?;
        let rest = parts.as_path().to_path_buf();
        if rest.as_os_str().is_empty() {
            if sys::stat_at(top.as_fd(), OsStr::new(""))
                .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFLNK)
            {
                return Err(fail(io::Error::from_raw_os_error(libc::ELOOP)));
            }
            return Ok((top, rel));
        }
        let fd = caller
            .run_as(|| open_beneath(top.as_fd(), &rest, libc::O_PATH, false))?
            .map_err(fail)?;
        Ok((fd, rel))
    }

    /// Whether `caller` may look names up in the mount's root, by the mode it shows.
    fn root_searchable_by(&self, caller: &Caller) -> bool {
        if caller.is_root() {
            return true;
        }
        let Ok(st) = self
            .root_fd()
            .and_then(|fd| Ok(sys::stat_at(fd.as_fd(), OsStr::new(""))?))
        else {
            return false;
        };
        let mode = self.root_mode.load(std::sync::atomic::Ordering::Relaxed);
        let bits = if caller.uid == st.st_uid {
            mode >> 6
        } else if caller.gid == st.st_gid || caller.groups().contains(&st.st_gid) {
            mode >> 3
        } else {
            mode
        };
        bits & 1 != 0
    }

    /// The path of `dir/name` from the backing root, as the registry stores paths.
    pub(super) fn rel_of(&self, dir: &Inode, name: &OsStr) -> Option<PathBuf> {
        let p = sys::path_of(dir.fd().ok()?.as_fd()).ok()?;
        Some(Path::new(&self.relative(&p)).join(name))
    }

    /// A backing path relative to the backing root, as the registry stores it.
    pub fn relative(&self, p: &Path) -> String {
        p.strip_prefix(&self.backing)
            .unwrap_or(p)
            .to_string_lossy()
            .into_owned()
    }
}

/// How `name` is stored in a directory (diriv `diriv`, descriptor `dir`) of a zone
/// with name ciphers `ciphers`, and the cipher it is stored with. While names move to
/// a new secret, a name still stored under the current one stays where it is, so no
/// name is ever stored twice.
fn stored_name<'c>(
    ciphers: &'c NameCiphers,
    diriv: &[u8; DIRIV_LEN],
    dir: BorrowedFd<'_>,
    name: &OsStr,
) -> (&'c Arc<NameCipher>, encnames::Stored) {
    let stored_as = |c: &Arc<NameCipher>| encnames::stored(encnames::encrypt_name(c, diriv, name.as_bytes()));
    let Some(next) = &ciphers.next else {
        return (&ciphers.current, stored_as(&ciphers.current));
    };
    let current = stored_as(&ciphers.current);
    if sys::stat_at(dir, OsStr::new(current.entry())).is_ok() {
        (&ciphers.current, current)
    } else {
        (next, stored_as(next))
    }
}

/// A path from the backing root as the mount shows it to a user: "/dir".
pub fn shown(rel: &Path) -> String {
    format!("/{}", rel.display())
}

/// A request's path from the mount root, checked: no `..`, no reserved name, and not
/// `.ezfs` at the top.
pub fn normalize(rel: &str) -> FsResult<PathBuf> {
    let rel = Path::new(rel.trim_start_matches('/'));
    let mut out = PathBuf::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) if !zone::is_reserved(n.as_encoded_bytes(), out.as_os_str().is_empty()) => {
                out.push(n)
            }
            Component::CurDir => {}
            _ => return Err(FsError::InvalidPath(rel.display().to_string())),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_paths_are_checked() {
        assert_eq!(normalize("/a/./b").unwrap(), Path::new("a/b"));
        assert_eq!(normalize("").unwrap(), Path::new(""));
        for bad in [
            "../x",
            "a/../../b",
            "a/.ezfs-zone",
            ".ezfs/keystore.json",
            "a/.ezfs-tmp.1",
        ] {
            assert!(normalize(bad).is_err(), "{bad}");
        }
        assert!(normalize("a/.ezfs").is_ok(), ".ezfs is reserved only at the top");
        let long = "x\n".repeat(3000);
        let e = normalize(&format!("../{long}")).unwrap_err().to_string();
        assert!(e.len() < 300 && !e.contains('\n'), "{e}");
    }
}
