//! What a backing may do to make the codec's I/O cheaper, apart from the I/O itself.
//!
//! Every hint has a default that does nothing: a backing that only stores bytes (a
//! plain file, a buffer in memory, a test double) implements [`Backing`] and adds an
//! empty `impl Hints for X {}`. The codec calls the hints through a generic parameter,
//! so a backing's hints are inlined into the read and write paths it is used with.
//!
//! [`Backing`]: super::Backing

use std::io;
use std::ops::Range;

/// Where a small data read lies, in backing offsets (see [`Hints::read_around`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Around {
    /// The aligned window of blocks holding the read, inside its group: what a backing
    /// may read with it.
    pub window: Range<u64>,
    /// The data blocks of the read's group: where a backing may look to judge whether
    /// the file is read densely. The caller's lock covers it.
    pub area: Range<u64>,
}

/// Performance hints of a backing file. None changes what a read returns or what a
/// write stores: doing nothing (the defaults) is always right.
pub trait Hints {
    /// Whether large aligned writes bypass the page cache (direct I/O): then the codec
    /// hands over whole group runs in one buffer, since no copy makes cache locality
    /// matter and each direct write has a fixed cost.
    fn writes_direct(&self) -> bool {
        false
    }

    /// Starts fetching `[off, off + len)` from the disk without waiting for it. The
    /// codec asks for a run's data this way just before it reads entries that are not
    /// in memory, so that the two disk reads overlap instead of following each other.
    fn prefetch(&self, _off: u64, _len: usize) {}

    /// Whether the metadata entries at `[off, off + len)` are held in memory, so that
    /// reading them costs no I/O. A backing that holds them may start loading them
    /// into the CPU cache: read after the data, they are there by then.
    fn entries_in_memory(&self, _off: u64, _len: usize) -> bool {
        false
    }

    /// Takes a read like [`Backing::read_at`](super::Backing::read_at) past the page
    /// cache, for a large read of data the caller will not read from the backing file
    /// again soon; `None` when this backing does not take this read that way (the
    /// caller then reads it buffered).
    fn read_direct(&self, _buf: &mut [u8], _off: u64) -> Option<io::Result<usize>> {
        None
    }

    /// Takes a small read like [`Backing::read_at`](super::Backing::read_at) inside
    /// `around.window`: a backing may read all of the window in the same disk request
    /// when the read misses the page cache, so that neighbours in a file read densely
    /// at random then cost no disk request of their own. `None` when this backing does
    /// not (the caller then reads just what it needs).
    fn read_around(&self, _buf: &mut [u8], _off: u64, _around: &Around) -> Option<io::Result<usize>> {
        None
    }
}

impl<H: Hints + ?Sized> Hints for &H {
    fn writes_direct(&self) -> bool {
        (**self).writes_direct()
    }
    fn prefetch(&self, off: u64, len: usize) {
        (**self).prefetch(off, len)
    }
    fn entries_in_memory(&self, off: u64, len: usize) -> bool {
        (**self).entries_in_memory(off, len)
    }
    fn read_direct(&self, buf: &mut [u8], off: u64) -> Option<io::Result<usize>> {
        (**self).read_direct(buf, off)
    }
    fn read_around(&self, buf: &mut [u8], off: u64, around: &Around) -> Option<io::Result<usize>> {
        (**self).read_around(buf, off, around)
    }
}
