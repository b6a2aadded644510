//! A backing file that can crash: what a disk under a journaling file system may hold
//! after a power cut, for tests of what the codec promises then.
//!
//! [`CrashBackend`] keeps two images of the file. Reads and writes work on the *live*
//! image, what the page cache holds; [`Backing::sync`] copies it to the *durable* one,
//! what the disk holds. Every change since the last sync is logged as pending, in
//! order:
//! - a write, as one pending write per 512-byte sector it touches: the sector as the
//!   live image holds it just after the write (so a write of part of a sector carries
//!   the rest of it, as the page it lies in does), and, if it extends the file, the
//!   lengths the file passes through;
//! - a length change, [`Backing::set_len`].
//!
//! [`CrashBackend::crash`] returns the backing a reboot would find: the durable image
//! with a chosen subset of the pending sector writes applied in order, and a chosen
//! number of the pending length changes (the first ones) committed.
//!
//! # What the model assumes
//!
//! - **Sectors are atomic, nothing larger is.** A 512-byte sector is written whole or
//!   not at all (what every file system above a real disk relies on), but the sectors
//!   of one write, even of one 4 KiB page, may reach the disk in any order, or some of
//!   them not at all. Since each pending write carries the whole sector as it was
//!   then, every sector ends as it was at the last sync or just after one of the
//!   writes since: never as a mix.
//! - **The length is one the file had since the last sync.** Journaling file systems
//!   (ext4, XFS, btrfs) log a change of the size as metadata, in order, and commit it
//!   independently of the data's writeback; Linux raises the size page by page as a
//!   write copies its data in. So a crash keeps a prefix of the length changes: the
//!   durable length, the live one, or one in between, down to the end of each page
//!   within one extending write. Which prefix is independent of which sectors were
//!   written: a length may be kept without the data that reaches up to it (which then
//!   reads as zeros, as on ext4 with `data=writeback`) and data past the kept length
//!   is lost. This allows more than ext4's default `data=ordered`, which writes newly
//!   allocated data before committing the size that exposes it.
//! - **A cut is a cut.** Data written before a committed shrink is cut with it: past
//!   the shrink's length the file then holds zeros (or what later kept writes put
//!   there). Before an uncommitted one it may still hold the old bytes, as the
//!   blocks a truncate frees stay mapped until it commits.
//! - **`fsync` and `fdatasync` both make everything durable**: the data and, for the
//!   latter too, the length (`fdatasync` commits a size change, which the data needs
//!   to be read back).

use super::backing::Backing;
use super::hints::Hints;
use parking_lot::Mutex;
use std::io;

/// Bytes a disk writes atomically.
pub const SECTOR: u64 = 512;
/// Steps in which a write raises the file's length (see the module doc).
const PAGE: u64 = 4096;

/// One change since the last sync.
#[derive(Debug, Clone)]
enum Pending {
    /// Sector `index` as the live image held it just after a write.
    Sector { index: u64, image: Box<[u8]> },
    /// The length became this.
    Len(u64),
}

#[derive(Debug, Default, Clone)]
struct Images {
    live: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<Pending>,
}

/// An in-memory backing file with a live and a durable image (see the module doc).
#[derive(Debug, Default)]
pub struct CrashBackend {
    images: Mutex<Images>,
    direct: bool,
}

impl CrashBackend {
    /// A file whose live and durable images are both `bytes`.
    pub fn new(bytes: Vec<u8>) -> CrashBackend {
        CrashBackend {
            images: Mutex::new(Images {
                live: bytes.clone(),
                durable: bytes,
                pending: Vec::new(),
            }),
            direct: false,
        }
    }

    /// The same, answering [`Hints::writes_direct`] with true: the codec then writes
    /// whole group runs at once.
    pub fn writing_direct(self) -> CrashBackend {
        CrashBackend { direct: true, ..self }
    }

    /// Sector writes pending since the last sync, which [`CrashBackend::crash`]
    /// numbers from 0 in order.
    pub fn pending_sectors(&self) -> usize {
        let images = self.images.lock();
        images
            .pending
            .iter()
            .filter(|p| matches!(p, Pending::Sector { .. }))
            .count()
    }

    /// Length changes pending since the last sync.
    pub fn pending_lengths(&self) -> usize {
        let images = self.images.lock();
        images
            .pending
            .iter()
            .filter(|p| matches!(p, Pending::Len(_)))
            .count()
    }

    /// The durable image: what a crash that kept nothing pending would leave.
    pub fn durable(&self) -> Vec<u8> {
        self.images.lock().durable.clone()
    }

    /// The live image: what reads see now.
    pub fn live(&self) -> Vec<u8> {
        self.images.lock().live.clone()
    }

    /// The file after a crash now: the durable image with the pending sector writes
    /// `i` for which `keep(i)` is true applied in order, and the first `lengths`
    /// pending length changes committed (all of them if there are fewer). Its images
    /// are both that, with nothing pending; this backing is left as it was.
    pub fn crash(&self, mut keep: impl FnMut(usize) -> bool, lengths: usize) -> CrashBackend {
        let images = self.images.lock();
        let mut disk = images.durable.clone();
        let mut len = disk.len();
        let (mut sectors, mut lens) = (0, 0);
        for p in &images.pending {
            match p {
                Pending::Sector { index, image } => {
                    if keep(sectors) {
                        let at = (index * SECTOR) as usize;
                        if disk.len() < at + image.len() {
                            disk.resize(at + image.len(), 0);
                        }
                        disk[at..at + image.len()].copy_from_slice(image);
                    }
                    sectors += 1;
                }
                Pending::Len(l) => {
                    if lens < lengths {
                        // every change before this one is committed too: the file's
                        // blocks past a shrink are freed, a growth adds zeros
                        len = *l as usize;
                        disk.resize(len, 0);
                    }
                    lens += 1;
                }
            }
        }
        disk.resize(len, 0);
        CrashBackend {
            direct: self.direct,
            ..CrashBackend::new(disk)
        }
    }
}

impl Backing for CrashBackend {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        let images = self.images.lock();
        let v = &images.live;
        let start = (off as usize).min(v.len());
        let n = buf.len().min(v.len() - start);
        buf[..n].copy_from_slice(&v[start..start + n]);
        Ok(n)
    }

    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let mut images = self.images.lock();
        let images = &mut *images;
        let end = off + buf.len() as u64;
        let mut len = images.live.len() as u64;
        if len < end {
            images.live.resize(end as usize, 0);
        }
        images.live[off as usize..end as usize].copy_from_slice(buf);
        for index in off / SECTOR..end.div_ceil(SECTOR) {
            let at = index * SECTOR;
            let to = (at + SECTOR).min(images.live.len() as u64);
            let mut image = vec![0u8; SECTOR as usize].into_boxed_slice();
            image[..(to - at) as usize].copy_from_slice(&images.live[at as usize..to as usize]);
            images.pending.push(Pending::Sector { index, image });
            // the length grows as each page of the write is copied in
            let copied = (at + SECTOR).min(end);
            if copied > len && (copied % PAGE == 0 || copied == end) {
                len = copied;
                images.pending.push(Pending::Len(len));
            }
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut images = self.images.lock();
        images.live.resize(len as usize, 0);
        images.pending.push(Pending::Len(len));
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.images.lock().live.len() as u64)
    }

    fn sync(&self, _data_only: bool) -> io::Result<()> {
        let mut images = self.images.lock();
        images.durable = images.live.clone();
        images.pending.clear();
        Ok(())
    }
}

impl Hints for CrashBackend {
    fn writes_direct(&self) -> bool {
        self.direct
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
            .collect()
    }

    #[test]
    fn sync_makes_the_live_image_durable() {
        let b = CrashBackend::new(vec![1; 1000]);
        b.write_at(&[2; 10], 100).unwrap();
        assert_eq!(b.live()[100..110], [2; 10]);
        assert_eq!(b.durable(), vec![1; 1000]);
        assert_eq!(b.crash(|_| false, 0).live(), vec![1; 1000]);
        b.sync(true).unwrap();
        assert_eq!((b.pending_sectors(), b.pending_lengths()), (0, 0));
        let after = b.crash(|_| false, 0);
        assert_eq!(after.live(), b.live());
        assert_eq!(after.durable(), b.live());
    }

    /// A write over three sectors is three writes that may land or not, each whole;
    /// the bytes of a sector the write does not cover come with it, as they were.
    #[test]
    fn a_write_tears_at_sectors() {
        let old = pattern(2048, 0);
        let b = CrashBackend::new(old.clone());
        let new = pattern(900, 9);
        b.write_at(&new, 300).unwrap(); // bytes 300..1200: sectors 0, 1 and 2
        assert_eq!((b.pending_sectors(), b.pending_lengths()), (3, 0));
        let mut want = old.clone();
        want[512..1024].copy_from_slice(&new[212..724]);
        assert_eq!(b.crash(|i| i == 1, 0).live(), want, "only sector 1");
        let mut want = old.clone();
        want[300..512].copy_from_slice(&new[..212]);
        want[1024..1200].copy_from_slice(&new[724..]);
        assert_eq!(b.crash(|i| i != 1, 0).live(), want, "sectors 0 and 2");
        assert_eq!(b.crash(|_| true, 0).live(), b.live());
        assert_eq!(b.crash(|_| false, 0).live(), old);
    }

    /// Two writes to one sector: keeping the second alone keeps the first's bytes too
    /// (the sector as it was after both), keeping the first alone does not.
    #[test]
    fn a_sector_ends_as_it_was_at_some_point() {
        let b = CrashBackend::new(vec![0; 512]);
        b.write_at(&[1; 10], 0).unwrap();
        b.write_at(&[2; 10], 100).unwrap();
        let second = b.crash(|i| i == 1, 0).live();
        assert_eq!((second[5], second[105]), (1, 2));
        let first = b.crash(|i| i == 0, 0).live();
        assert_eq!((first[5], first[105]), (1, 0));
    }

    /// An extending write raises the length page by page; a kept length without its
    /// data reads zeros, data past the kept length is lost.
    #[test]
    fn lengths_are_kept_in_order_and_apart_from_the_data() {
        let b = CrashBackend::new(vec![7; 4096]);
        b.write_at(&pattern(6000, 3), 5000).unwrap(); // to 11000: pages end at 8192, then 11000
        assert_eq!(b.pending_lengths(), 2);
        assert_eq!(b.crash(|_| true, 0).live(), vec![7; 4096], "no length kept");
        let one = b.crash(|_| false, 1).live();
        assert_eq!(one.len(), 8192);
        assert!(one[4096..].iter().all(|&x| x == 0), "the length without its data");
        let two = b.crash(|_| true, 2).live();
        assert_eq!(two, b.live());
        // a length change by set_len
        b.sync(false).unwrap();
        b.set_len(100).unwrap();
        assert_eq!(b.crash(|_| true, 0).live().len(), 11000);
        assert_eq!(b.crash(|_| true, 1).live(), b.live());
    }

    /// Data written before a committed shrink is cut with it; written after, it stays.
    #[test]
    fn a_committed_shrink_cuts_what_was_written_before() {
        let b = CrashBackend::new(vec![5; 8192]);
        b.write_at(&[6; 100], 6000).unwrap(); // no length change
        b.set_len(1000).unwrap();
        b.set_len(8192).unwrap();
        b.write_at(&[8; 10], 7000).unwrap();
        assert_eq!((b.pending_sectors(), b.pending_lengths()), (2, 2));
        let cut = b.crash(|_| true, 2).live();
        assert_eq!(cut.len(), 8192);
        assert_eq!(cut[..1000], [5; 1000]);
        assert!(
            cut[1000..7000].iter().all(|&x| x == 0),
            "the write before the cut is gone"
        );
        assert_eq!(cut[7000..7010], [8; 10]);
        let uncut = b.crash(|_| true, 0).live();
        assert_eq!((uncut[6000], uncut[1000], uncut[7000]), (6, 5, 8));
        // the sector carries the zeros the cut left in the live image
        assert!(uncut[7010..7168].iter().all(|&x| x == 0));
    }
}
