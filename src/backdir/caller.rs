//! Who asked: the identity of the process behind a request, and work done in the
//! backing dir with that identity.
//!
//! The daemon runs as root. When it resolves a path for a user (a control request
//! naming a directory), the kernel must check that user's rights, exactly as it would
//! for the same path through the mount: so the resolution runs in a short-lived thread
//! whose file-system ids and groups are the caller's. Linux keeps credentials per
//! thread (the raw system calls change only the calling thread, unlike glibc's
//! wrappers), and a thread's credentials end with it, so nothing can leak into the
//! threads that serve the filesystem.

/// The process behind a request: from the kernel (FUSE) or the control socket
/// (`SO_PEERCRED`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The process's user id.
    pub uid: u32,
    /// The process's primary group id.
    pub gid: u32,
    /// The process id (`/proc/PID/status` lists its groups).
    pub pid: u32,
    /// Supplementary groups, when known without asking `/proc` (see [`Caller::groups`]).
    pub groups: Option<Vec<u32>>,
}

impl Caller {
    /// A caller whose supplementary groups are read from `/proc` when needed.
    pub fn new(uid: u32, gid: u32, pid: u32) -> Caller {
        Caller {
            uid,
            gid,
            pid,
            groups: None,
        }
    }

    /// A caller whose supplementary groups are known (tests; callers not behind a
    /// process).
    pub fn with_groups(uid: u32, gid: u32, pid: u32, groups: Vec<u32>) -> Caller {
        Caller {
            groups: Some(groups),
            ..Caller::new(uid, gid, pid)
        }
    }

    /// The daemon itself (root, or whoever runs it).
    pub fn myself() -> Caller {
        // SAFETY: these calls cannot fail.
        unsafe { Caller::new(libc::geteuid(), libc::getegid(), libc::getpid() as u32) }
    }

    /// Whether the caller is root (uid 0).
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// The supplementary groups of the calling process (the kernel passes only uid
    /// and gid; `/proc` has the rest, asked only when a decision needs them). Empty if
    /// the process is gone.
    pub fn groups(&self) -> Vec<u32> {
        if let Some(g) = &self.groups {
            return g.clone();
        }
        std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Groups:"))
                    .map(|g| g.split_whitespace().filter_map(|n| n.parse().ok()).collect())
            })
            .unwrap_or_default()
    }

    /// Runs `f` with this caller's file-system identity (uid, gid and supplementary
    /// groups), so every path `f` resolves is checked against the caller's rights.
    /// Root runs `f` as it is.
    pub fn run_as<R: Send>(&self, f: impl FnOnce() -> R + Send) -> std::io::Result<R> {
        if self.is_root() {
            return Ok(f());
        }
        let groups = self.groups();
        std::thread::scope(|s| {
            s.spawn(|| {
                become_user(self.uid, self.gid, &groups)?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("a worker thread panicked")))
        })
    }
}

/// Gives the calling thread (only) the file-system identity of `uid`/`gid`/`groups`.
/// Changing the file-system uid away from 0 also drops the thread's file-system
/// capabilities (CAP_DAC_OVERRIDE and the like), so its accesses are checked as the
/// user's.
fn become_user(uid: u32, gid: u32, groups: &[u32]) -> std::io::Result<()> {
    // SAFETY: raw system calls that change only this thread's credentials; `groups`
    // is a valid array of its length.
    unsafe {
        if libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        libc::syscall(libc::SYS_setfsgid, gid);
        libc::syscall(libc::SYS_setfsuid, uid);
        // setfs[ug]id return the previous value: ask again to see the new one took
        let (u, g) = (
            libc::syscall(libc::SYS_setfsuid, u32::MAX) as u32,
            libc::syscall(libc::SYS_setfsgid, u32::MAX) as u32,
        );
        if (u, g) != (uid, gid) {
            return Err(std::io::Error::from_raw_os_error(libc::EPERM));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_with_the_callers_rights_only_in_its_thread() {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("NOTE: not root; identity switch not tested");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let secret = t.path().join("secret");
        std::fs::write(&secret, b"x").unwrap();
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let user = Caller::new(60_123, 60_123, std::process::id());
        let r = user.run_as(|| std::fs::read(&secret)).unwrap();
        assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::PermissionDenied);
        // this thread is still root
        assert_eq!(std::fs::read(&secret).unwrap(), b"x");
        let root = Caller::new(0, 0, std::process::id());
        assert!(root.run_as(|| std::fs::read(&secret)).unwrap().is_ok());
    }
}
