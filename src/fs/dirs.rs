//! Directory handles and listings, and the filesystem's space.

use super::atime;
use super::core::{Core, Handle};
use super::error::{errno, FsResult};
use super::inode::{Inode, ROOT};
use super::types::{Attr, DirEntry, StatFs};
use crate::backdir::sys;
use parking_lot::Mutex;
use std::os::fd::AsFd;

impl Core {
    /// OPENDIR: the listing is made by the first read, from offset 0.
    pub fn opendir(&self, ino: u64) -> FsResult<u64> {
        self.inode(ino)?.fd()?;
        Ok(self.add_handle(Handle::Dir(Mutex::new(Vec::new()))))
    }

    /// The entries of an open directory for a read at `offset`. A read from the start
    /// (the first, or after `rewinddir`) lists the directory again, as POSIX wants;
    /// later offsets index that same listing, so `telldir`/`seekdir` stay stable.
    fn dir_page(&self, dir: &Inode, fh: u64, offset: u64) -> FsResult<Vec<DirEntry>> {
        let h = self.handle(fh)?;
        let Handle::Dir(entries) = &*h else {
            return Err(errno::ENOTDIR);
        };
        let mut e = entries.lock();
        if offset == 0 {
            *e = self.list(dir)?;
            atime::dir_listed(self.atime.dirs, dir.fd()?.as_fd());
        }
        Ok(e.get(offset as usize..).map(<[_]>::to_vec).unwrap_or_default())
    }

    /// READDIR from `offset`: hands each entry and the offset after it to `add` until
    /// it says the reply is full.
    pub fn readdir(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        add: &mut dyn FnMut(&DirEntry, u64) -> bool,
    ) -> FsResult<()> {
        let dir = self.inode(ino)?;
        for (i, e) in self.dir_page(&dir, fh, offset)?.iter().enumerate() {
            if add(e, offset + i as u64 + 1) {
                break;
            }
        }
        Ok(())
    }

    /// READDIRPLUS from `offset`: each entry is looked up and handed to `add` with its
    /// attributes and whether a lookup was counted for it ("." and ".." get none);
    /// when `add` says the reply is full, that entry's lookup is taken back.
    pub fn readdirplus(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        add: &mut dyn FnMut(&DirEntry, u64, &Attr, bool) -> bool,
    ) -> FsResult<()> {
        let dir = self.inode(ino)?;
        for (i, e) in self.dir_page(&dir, fh, offset)?.iter().enumerate() {
            let next = offset + i as u64 + 1;
            if e.name == "." || e.name == ".." {
                // the kernel links no dentry for these, so no lookup is counted
                let attr = self.getattr_of(&dir)?;
                if add(e, next, &attr, false) {
                    break;
                }
                continue;
            }
            let Ok((child, attr)) = self.lookup_listed(&dir, e) else {
                continue;
            };
            if add(e, next, &attr, true) {
                self.inodes.forget(child.id, 1);
                break;
            }
        }
        Ok(())
    }

    /// RELEASEDIR.
    pub fn releasedir(&self, fh: u64) {
        self.remove_handle(fh);
    }

    /// FSYNCDIR.
    pub fn fsyncdir(&self, ino: u64) -> FsResult<()> {
        let i = self.inode(ino)?;
        Ok(sys::reopen(i.fd()?.as_fd(), libc::O_RDONLY | libc::O_DIRECTORY).and_then(|f| f.sync_all())?)
    }

    /// STATFS: the backing filesystem's.
    pub fn statfs(&self) -> FsResult<StatFs> {
        let s = sys::statvfs(self.inode(ROOT)?.fd()?.as_fd())?;
        Ok(StatFs {
            blocks: s.f_blocks,
            bfree: s.f_bfree,
            bavail: s.f_bavail,
            files: s.f_files,
            ffree: s.f_ffree,
            bsize: s.f_bsize as u32,
            namelen: s.f_namemax as u32,
            frsize: s.f_frsize as u32,
        })
    }
}
