//! Counters since mount, for `ezfs status`: requests served and what went wrong.
//! Relaxed atomics: one add per read or write request, nothing on the data path else.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};

static READS: AtomicU64 = AtomicU64::new(0);
static WRITES: AtomicU64 = AtomicU64::new(0);
static BYTES_READ: AtomicU64 = AtomicU64::new(0);
static BYTES_WRITTEN: AtomicU64 = AtomicU64::new(0);
static AUTH_FAILURES: AtomicU64 = AtomicU64::new(0);
static EIO: AtomicU64 = AtomicU64::new(0);

/// A read request that returned `n` bytes.
pub fn read(n: usize) {
    READS.fetch_add(1, Ordering::Relaxed);
    BYTES_READ.fetch_add(n as u64, Ordering::Relaxed);
}

/// A write request of `n` bytes.
pub fn written(n: usize) {
    WRITES.fetch_add(1, Ordering::Relaxed);
    BYTES_WRITTEN.fetch_add(n as u64, Ordering::Relaxed);
}

/// A block or header that failed authentication.
pub fn auth_failure() {
    AUTH_FAILURES.fetch_add(1, Ordering::Relaxed);
}

/// A request answered with EIO.
pub fn eio() {
    EIO.fetch_add(1, Ordering::Relaxed);
}

/// The counters now.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counters {
    /// Read requests served.
    pub reads: u64,
    /// Write requests served.
    pub writes: u64,
    /// Bytes returned by reads.
    pub bytes_read: u64,
    /// Bytes written by write requests.
    pub bytes_written: u64,
    /// Blocks and headers that failed authentication.
    pub auth_failures: u64,
    /// Reads and opens answered with EIO.
    pub eio: u64,
}

/// The counters now, for `ezfs status`.
pub fn snapshot() -> Counters {
    Counters {
        reads: READS.load(Ordering::Relaxed),
        writes: WRITES.load(Ordering::Relaxed),
        bytes_read: BYTES_READ.load(Ordering::Relaxed),
        bytes_written: BYTES_WRITTEN.load(Ordering::Relaxed),
        auth_failures: AUTH_FAILURES.load(Ordering::Relaxed),
        eio: EIO.load(Ordering::Relaxed),
    }
}
