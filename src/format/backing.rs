//! The storage under an encrypted file: positioned reads and writes and a length.
//!
//! The codec is written against this trait so that it runs on a real file in the
//! filesystem and on an in-memory buffer in tests and benchmarks.

use parking_lot::RwLock;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;

/// Where a small data read lies, in backing offsets (see [`Backing::read_around`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Around {
    /// The aligned window of blocks holding the read, inside its group: what a backing
    /// may read with it.
    pub window: Range<u64>,
    /// The data blocks of the read's group: where a backing may look to judge whether
    /// the file is read densely. The caller's lock covers it.
    pub area: Range<u64>,
}

/// Positioned I/O on the ciphertext of one file.
#[allow(clippy::len_without_is_empty)] // a length in bytes, as File::metadata().len()
pub trait Backing {
    /// Reads up to `buf.len()` bytes at `off`; fewer only at end of file.
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `off`, extending the file (with a hole) if needed.
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()>;
    /// Sets the length (shrinking, or growing with a hole).
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Current length.
    fn len(&self) -> io::Result<u64>;
    /// Whether large aligned writes bypass the page cache (direct I/O): then the codec
    /// hands over whole group runs in one buffer, since no copy makes cache locality
    /// matter and each direct write has a fixed cost.
    fn writes_direct(&self) -> bool {
        false
    }
    /// Starts fetching `[off, off + len)` from the disk without waiting for it. A
    /// hint: doing nothing is right.
    fn prefetch(&self, _off: u64, _len: usize) {}
    /// Reads metadata entries like [`Backing::read_at`], for a read of `data_len`
    /// bytes of data at `data_at` that comes next. A backing that has to fetch the
    /// entries from the disk may [`Backing::prefetch`] the data first, so that the two
    /// disk reads overlap instead of following each other.
    fn read_entries(&self, buf: &mut [u8], off: u64, _data_at: u64, _data_len: usize) -> io::Result<usize> {
        self.read_at(buf, off)
    }
    /// Whether the metadata entries at `[off, off + len)` are held in memory, so that
    /// reading them costs no I/O. A backing that holds them may start loading them
    /// into the CPU cache: read after the data, they are there by then.
    fn entries_in_memory(&self, _off: u64, _len: usize) -> bool {
        false
    }
    /// Reads like [`Backing::read_at`], past the page cache, for a large read of data
    /// the caller will not read from the backing file again soon; `None` when this
    /// backing does not take this read that way (the caller then reads it buffered).
    fn read_direct(&self, _buf: &mut [u8], _off: u64) -> Option<io::Result<usize>> {
        None
    }
    /// Reads like [`Backing::read_at`], for a small read inside `around.window`. A
    /// backing may read all of the window in the same disk request when the read misses
    /// the page cache: neighbours in a file read densely at random then cost no disk
    /// request of their own.
    fn read_around(&self, buf: &mut [u8], off: u64, _around: &Around) -> io::Result<usize> {
        self.read_at(buf, off)
    }
}

impl<B: Backing + ?Sized> Backing for &B {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        (**self).read_at(buf, off)
    }
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        (**self).write_at(buf, off)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        (**self).set_len(len)
    }
    fn len(&self) -> io::Result<u64> {
        (**self).len()
    }
    fn writes_direct(&self) -> bool {
        (**self).writes_direct()
    }
    fn prefetch(&self, off: u64, len: usize) {
        (**self).prefetch(off, len)
    }
    fn read_entries(&self, buf: &mut [u8], off: u64, data_at: u64, data_len: usize) -> io::Result<usize> {
        (**self).read_entries(buf, off, data_at, data_len)
    }
    fn entries_in_memory(&self, off: u64, len: usize) -> bool {
        (**self).entries_in_memory(off, len)
    }
    fn read_direct(&self, buf: &mut [u8], off: u64) -> Option<io::Result<usize>> {
        (**self).read_direct(buf, off)
    }
    fn read_around(&self, buf: &mut [u8], off: u64, around: &Around) -> io::Result<usize> {
        (**self).read_around(buf, off, around)
    }
}

impl Backing for File {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match FileExt::read_at(self, &mut buf[done..], off + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        self.write_all_at(buf, off)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
}

/// An in-memory backing file, for tests and benchmarks.
#[derive(Default, Debug)]
pub struct MemBacking(pub RwLock<Vec<u8>>);

impl Backing for MemBacking {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        let v = self.0.read();
        let start = (off as usize).min(v.len());
        let n = buf.len().min(v.len() - start);
        buf[..n].copy_from_slice(&v[start..start + n]);
        Ok(n)
    }
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        let mut v = self.0.write();
        let end = off as usize + buf.len();
        if v.len() < end {
            v.resize(end, 0);
        }
        v[off as usize..end].copy_from_slice(buf);
        Ok(())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.write().resize(len as usize, 0);
        Ok(())
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.read().len() as u64)
    }
}
