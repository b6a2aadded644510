//! Extended attributes and `access`.
//!
//! They go through the node's descriptor's `/proc/self/fd` link, which leads to the
//! file itself, a symlink included (the link in `/proc` is followed, the symlink it
//! names is not): so symlinks have `trusted.*` and `security.*` attributes as on the
//! backing filesystem (the kernel refuses `user.*` on them itself).

use super::core::Core;
use super::error::{errno, FsResult};
use crate::backdir::{sys, Caller};
use std::ffi::{CString, OsStr};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;

fn c_name(name: &OsStr) -> FsResult<CString> {
    CString::new(name.as_bytes()).map_err(|_| errno::EINVAL)
}

/// The daemon changes extended attributes as root: names that only a privileged
/// process may set (`security.*`: CAP_SYS_ADMIN, CAP_SETFCAP for capabilities, as the
/// kernel's capability checks want on a local filesystem) are refused to everyone else
/// here, whatever the kernel's security modules let through to the mount.
fn allowed(caller: &Caller, name: &OsStr) -> FsResult<()> {
    if !caller.is_root() && name.as_bytes().starts_with(b"security.") {
        return Err(errno::EPERM);
    }
    Ok(())
}

impl Core {
    /// SETXATTR.
    pub fn setxattr(
        &self,
        caller: &Caller,
        ino: u64,
        name: &OsStr,
        value: &[u8],
        flags: i32,
    ) -> FsResult<()> {
        self.writable_check()?;
        allowed(caller, name)?;
        let i = self.inode(ino)?;
        Ok(sys::setxattr(i.fd()?.as_fd(), &c_name(name)?, value, flags)?)
    }

    /// GETXATTR into `buf` (empty: just the size). The kernel asks for
    /// `security.capability` at the first write of every new file, so an open
    /// encrypted file answers on its own descriptor: a regular file, so no type check,
    /// and no walk through `/proc`.
    pub fn getxattr(&self, ino: u64, name: &OsStr, buf: &mut [u8]) -> FsResult<usize> {
        let name = c_name(name)?;
        let i = self.inode(ino)?;
        let open = i.enc.lock().upgrade();
        if let Some(e) = open {
            return Ok(sys::fgetxattr(e.file(), &name, buf)?);
        }
        Ok(sys::getxattr(i.fd()?.as_fd(), &name, buf)?)
    }

    /// LISTXATTR into `buf` (empty: just the size).
    pub fn listxattr(&self, ino: u64, buf: &mut [u8]) -> FsResult<usize> {
        Ok(sys::listxattr(self.inode(ino)?.fd()?.as_fd(), buf)?)
    }

    /// REMOVEXATTR.
    pub fn removexattr(&self, caller: &Caller, ino: u64, name: &OsStr) -> FsResult<()> {
        self.writable_check()?;
        allowed(caller, name)?;
        let i = self.inode(ino)?;
        Ok(sys::removexattr(i.fd()?.as_fd(), &c_name(name)?)?)
    }

    /// ACCESS: asked only without `default_permissions`, that is for the mounting user
    /// alone, whose rights the daemon has: the backing file answers.
    pub fn access(&self, ino: u64, mask: i32) -> FsResult<()> {
        Ok(sys::access(self.inode(ino)?.fd()?.as_fd(), mask)?)
    }
}
