//! An encrypted regular file while it is open: backing descriptor, header, unwrapped
//! data key and plaintext size, shared by every handle of the inode so the key is
//! unwrapped once per open file, not per request.

use super::sys;
use crate::crypto::{random_bytes, Key};
use crate::format::layout::{self, plain_size};
use crate::format::{Backing, BlockCodec, CodecError, Header};
use crate::keys::{KeyError, KeyProvider};
use crate::zone::Zone;
use fuser::Errno;
use parking_lot::RwLock;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};

/// Shared state of one open encrypted file. The size lock also serializes writers, so
/// a read-modify-write of a partial block never loses a concurrent writer's bytes.
pub struct EncFile {
    file: File,
    /// `None` only for an empty file without header opened where it cannot be written.
    cipher: Option<(Header, BlockCodec)>,
    size: RwLock<u64>,
}

/// Converts an I/O error to the errno the kernel should see.
pub fn errno(e: &io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

/// Creates a header for a new file in `zone`: a fresh DEK wrapped by the zone key's
/// newest version.
pub fn new_header(zone: &Zone, keys: &dyn KeyProvider) -> Result<(Header, BlockCodec), KeyError> {
    let version = keys.current_version(&zone.key)?;
    let file_id = random_bytes::<16>();
    let dek = Key::random();
    let aad = Header::aad(&file_id, &zone.id, &zone.key, version);
    let edek = keys.wrap(&zone.key, version, &aad, &dek)?;
    let header = Header {
        file_id,
        zone_id: zone.id,
        key_name: zone.key.clone(),
        key_version: version,
        edek,
    };
    Ok((header, BlockCodec::new(&dek, file_id)))
}

/// Reads and parses the header of a non-empty encrypted backing file.
pub fn read_header(file: &File) -> Result<Header, String> {
    let mut buf = vec![0u8; layout::HEADER_LEN as usize];
    let n = Backing::read_at(file, &mut buf, 0).map_err(|e| e.to_string())?;
    Header::decode(&buf[..n]).map_err(|e| e.to_string())
}

impl EncFile {
    /// Opens the encrypted file behind `fd`. An empty file gets its header now when
    /// `writable`; `keys` unwraps the DEK. Failures are logged with the path.
    pub fn open(
        fd: BorrowedFd<'_>,
        zone: &Zone,
        keys: &dyn KeyProvider,
        writable: bool,
    ) -> Result<EncFile, Errno> {
        if let Some(why) = &zone.broken {
            log::error!("{}: zone unusable: {why}", sys::describe(fd));
            return Err(Errno::EIO);
        }
        let file = match writable {
            true => sys::reopen(fd, libc::O_RDWR).or_else(|_| sys::reopen(fd, libc::O_RDONLY)),
            false => sys::reopen(fd, libc::O_RDONLY),
        }
        .map_err(|e| errno(&e))?;
        Self::from_file(file, zone, keys, writable)
    }

    /// Like [`EncFile::open`], on a backing file already open (read-write when `writable`).
    pub fn from_file(
        file: File,
        zone: &Zone,
        keys: &dyn KeyProvider,
        writable: bool,
    ) -> Result<EncFile, Errno> {
        let fail = |file: &File, what: String| {
            log::error!("{}: {what}", sys::describe(file.as_fd()));
            Errno::EIO
        };
        if let Some(why) = &zone.broken {
            return Err(fail(&file, format!("zone unusable: {why}")));
        }
        let len = file.metadata().map_err(|e| errno(&e))?.len();
        if len == 0 {
            let cipher = if writable {
                let (header, codec) = new_header(zone, keys).map_err(|e| fail(&file, e.to_string()))?;
                std::os::unix::fs::FileExt::write_all_at(&file, &header.encode(), 0)
                    .map_err(|e| errno(&e))?;
                Some((header, codec))
            } else {
                None
            };
            return Ok(EncFile {
                file,
                cipher,
                size: RwLock::new(0),
            });
        }
        let size = plain_size(len)
            .map_err(|_| fail(&file, format!("backing size {len} is too short for a header")))?;
        let header = read_header(&file).map_err(|e| fail(&file, e))?;
        let dek = keys
            .unwrap(
                &header.key_name,
                header.key_version,
                &header.own_aad(),
                &header.edek,
            )
            .map_err(|e| fail(&file, e.to_string()))?;
        let codec = BlockCodec::new(&dek, header.file_id);
        Ok(EncFile {
            file,
            cipher: Some((header, codec)),
            size: RwLock::new(size),
        })
    }

    fn codec_error(&self, e: CodecError) -> Errno {
        match e {
            CodecError::Io(e) => errno(&e),
            CodecError::Corrupt { block } => {
                log::error!(
                    "{}: block {block} failed authentication; reads of it get EIO",
                    sys::describe(self.file.as_fd())
                );
                Errno::EIO
            }
        }
    }

    fn codec(&self) -> Result<&BlockCodec, Errno> {
        self.cipher.as_ref().map(|(_, c)| c).ok_or(Errno::EBADF)
    }

    /// Current plaintext size.
    pub fn size(&self) -> u64 {
        *self.size.read()
    }

    /// Reads up to `out.len()` bytes at `off` into `out`; returns how many.
    pub fn read_into(&self, off: u64, out: &mut [u8]) -> Result<usize, Errno> {
        let size = self.size.read();
        if off >= *size {
            return Ok(0);
        }
        self.codec()?
            .read(&self.file, *size, off, out)
            .map_err(|e| self.codec_error(e))
    }

    /// Writes `data` at `off`.
    pub fn write(&self, off: u64, data: &[u8]) -> Result<(), Errno> {
        let mut size = self.size.write();
        *size = self
            .codec()?
            .write(&self.file, *size, off, data)
            .map_err(|e| self.codec_error(e))?;
        Ok(())
    }

    /// Sets the plaintext size.
    pub fn truncate(&self, new_size: u64) -> Result<(), Errno> {
        let mut size = self.size.write();
        if new_size == *size && self.cipher.is_some() {
            return Ok(());
        }
        self.codec()?
            .truncate(&self.file, *size, new_size)
            .map_err(|e| self.codec_error(e))?;
        *size = new_size;
        Ok(())
    }

    /// Makes every range in `[off, off+len)` read as zeros (punch hole / zero range):
    /// the plaintext zeros are encrypted, so the result authenticates like any data.
    pub fn zero_range(&self, off: u64, len: u64, keep_size: bool) -> Result<(), Errno> {
        let size = self.size();
        let end = if keep_size {
            (off + len).min(size)
        } else {
            off + len
        };
        let zeros = vec![0u8; 1 << 20];
        let mut at = off;
        while at < end {
            let n = (end - at).min(zeros.len() as u64) as usize;
            self.write(at, &zeros[..n])?;
            at += n as u64;
        }
        Ok(())
    }

    /// Reserves backing space for `[off, off+len)` (plain `fallocate`): the new
    /// backing blocks read as zeros, which the codec reads as holes.
    pub fn allocate(&self, off: u64, len: u64, keep_size: bool) -> Result<(), Errno> {
        if !keep_size && off + len > self.size() {
            self.truncate(off + len)?;
        }
        let start = layout::data_offset(off / layout::BLOCK) - layout::BLOCK;
        let end = layout::backing_size(off + len);
        sys::fallocate(&self.file, libc::FALLOC_FL_KEEP_SIZE, start, end - start).map_err(|e| errno(&e))
    }

    pub fn sync(&self, data_only: bool) -> Result<(), Errno> {
        if data_only {
            self.file.sync_data()
        } else {
            self.file.sync_all()
        }
        .map_err(|e| errno(&e))
    }

    /// The header (None for an empty file not yet given one).
    pub fn header(&self) -> Option<&Header> {
        self.cipher.as_ref().map(|(h, _)| h)
    }
}
