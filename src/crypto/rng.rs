//! The random numbers of the hot path: a per-thread ChaCha generator seeded from the
//! operating system, reseeded after every 1 MiB it gives and after `fork`.
//!
//! A forked child copies its parent's generator state: without the reseed both would
//! draw the same nonces next. `pthread_atfork` counts forks; a thread's generator
//! notices the count changed and seeds itself again before its next draw.

use rand::{rngs::StdRng, RngCore, SeedableRng};
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

/// Output after which a thread's generator takes a new seed from the OS.
const RESEED_AFTER: u64 = 1 << 20;

/// Forks so far (in this process's line of ancestry).
static FORKS: AtomicU64 = AtomicU64::new(0);
static HOOK: Once = Once::new();

extern "C" fn forked() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

struct Local {
    rng: StdRng,
    forks: u64,
    given: u64,
}

thread_local! {
    static LOCAL: RefCell<Option<Local>> = const { RefCell::new(None) };
}

/// Fills `buf` with random bytes.
pub fn fill(buf: &mut [u8]) {
    HOOK.call_once(|| {
        // SAFETY: registers a handler that only increments an atomic.
        unsafe { libc::pthread_atfork(None, None, Some(forked)) };
    });
    LOCAL.with_borrow_mut(|local| {
        let forks = FORKS.load(Ordering::Relaxed);
        let stale = local
            .as_ref()
            .is_none_or(|l| l.forks != forks || l.given >= RESEED_AFTER);
        if stale {
            *local = Some(Local {
                rng: StdRng::from_os_rng(),
                forks,
                given: 0,
            });
        }
        let l = local.as_mut().expect("seeded above");
        l.rng.fill_bytes(buf);
        l.given += buf.len() as u64;
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::FromRawFd;

    /// Parent and child draw different bytes after a fork, though the child starts
    /// with a copy of the parent's generator.
    #[test]
    fn a_forked_child_draws_other_bytes() {
        let mut warm = [0u8; 16];
        fill(&mut warm);
        let mut fds = [0; 2];
        // SAFETY: fds is a valid array of two ints.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: the child only draws random bytes, writes them and exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let mut b = [0u8; 16];
            fill(&mut b);
            // SAFETY: writes to the pipe's write end, then leaves without unwinding.
            unsafe {
                libc::write(fds[1], b.as_ptr().cast(), b.len());
                libc::_exit(0);
            }
        }
        let mut mine = [0u8; 16];
        fill(&mut mine);
        // SAFETY: the write end is ours to close; the read end becomes a File we own.
        unsafe { libc::close(fds[1]) };
        let mut theirs = [0u8; 16];
        // SAFETY: as above.
        let mut r = unsafe { std::fs::File::from_raw_fd(fds[0]) };
        r.read_exact(&mut theirs).unwrap();
        // SAFETY: reaps the child.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        assert_ne!(mine, theirs, "parent and child drew the same bytes after fork");
    }
}
