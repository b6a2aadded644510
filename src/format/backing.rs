//! The storage under an encrypted file: positioned reads and writes and a length.
//!
//! The codec is written against this trait (with [`Hints`], together [`Storage`]) so
//! that it runs on a real file in the filesystem and on an in-memory buffer in tests
//! and benchmarks.

use super::hints::Hints;
use parking_lot::RwLock;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Positioned I/O on the ciphertext of one file.
///
/// Only what changes or reads the stored bytes is here; how to make it cheaper is in
/// [`Hints`]. Writes become durable only through [`Backing::sync`]: until then a crash
/// may keep any part of them (the tests' model of that is `format::crash`).
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
    /// Makes every write and length change so far durable: `fdatasync` with
    /// `data_only` (the length included, as far as reading the data needs it), else
    /// `fsync`.
    fn sync(&self, data_only: bool) -> io::Result<()>;
}

/// What the codec runs on: a [`Backing`] with its [`Hints`].
pub trait Storage: Backing + Hints {}

impl<T: Backing + Hints + ?Sized> Storage for T {}

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
    fn sync(&self, data_only: bool) -> io::Result<()> {
        (**self).sync(data_only)
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
    fn sync(&self, data_only: bool) -> io::Result<()> {
        if data_only {
            self.sync_data()
        } else {
            self.sync_all()
        }
    }
}

impl Hints for File {}

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
    /// Memory is as durable as it gets: nothing to do.
    fn sync(&self, _data_only: bool) -> io::Result<()> {
        Ok(())
    }
}

impl Hints for MemBacking {}
