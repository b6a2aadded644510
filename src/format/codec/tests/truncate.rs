//! Truncate edge cases, and growth that fails half-way: the file stays as the caller
//! believes it is.

use super::*;

/// Truncates, checks the backing length and returns the new size.
fn truncate(c: &BlockCodec, b: &MemBacking, size: u64, new_size: u64) -> u64 {
    c.truncate(b, size, new_size).unwrap();
    assert_eq!(b.len().unwrap(), backing_size(new_size), "{size} -> {new_size}");
    new_size
}

#[test]
fn shrink_mid_block_then_grow_reads_zeros() {
    let c = codec();
    let b = empty_backing();
    let data = bytes(10, 3 * BLOCK as usize);
    let size = c.write(&b, 0, 0, &data).unwrap();
    let size = truncate(&c, &b, size, 5000);
    assert_eq!(read_all(&c, &b, size).unwrap(), &data[..5000]);
    let size = truncate(&c, &b, size, 3 * BLOCK + 10);
    let all = read_all(&c, &b, size).unwrap();
    assert_eq!(&all[..5000], &data[..5000]);
    assert!(all[5000..].iter().all(|&x| x == 0));
    assert_eq!(c.verify(&b, size).unwrap(), Vec::<u64>::new());

    // shrinking within one block, then growing by a write past the end
    let size = truncate(&c, &b, size, 4500);
    let size = c.write(&b, size, 9000, b"x").unwrap();
    let all = read_all(&c, &b, size).unwrap();
    assert_eq!(&all[..4500], &data[..4500]);
    assert!(all[4500..9000].iter().all(|&x| x == 0));
    assert_eq!(all[9000], b'x');
}

#[test]
fn shrink_to_group_boundary_then_grow() {
    let c = codec();
    let b = empty_backing();
    let data = bytes(11, 200 * BLOCK as usize);
    let size = c.write(&b, 0, 0, &data).unwrap();
    let size = truncate(&c, &b, size, G);
    // the second group's metadata block is gone entirely
    assert_eq!(b.len().unwrap(), meta_offset(1));
    let size = truncate(&c, &b, size, 131 * BLOCK);
    let all = read_all(&c, &b, size).unwrap();
    assert_eq!(&all[..G as usize], &data[..G as usize]);
    assert!(all[G as usize..].iter().all(|&x| x == 0));
    assert_eq!(c.verify(&b, size).unwrap(), Vec::<u64>::new());

    // just past the boundary: block 128 is one byte long
    let size = truncate(&c, &b, size, G + 1);
    let size = c.write(&b, size, G + 1, &data[..10]).unwrap();
    let size = truncate(&c, &b, size, G + 2 * BLOCK);
    let all = read_all(&c, &b, size).unwrap();
    assert_eq!(all[G as usize], 0);
    assert_eq!(&all[G as usize + 1..][..10], &data[..10]);
    assert!(all[G as usize + 11..].iter().all(|&x| x == 0));
}

#[test]
fn shrink_mid_group_clears_cut_entries() {
    let c = codec();
    let b = empty_backing();
    let data = bytes(12, 100 * BLOCK as usize);
    let size = c.write(&b, 0, 0, &data).unwrap();
    let size = truncate(&c, &b, size, 10 * BLOCK + 5);
    // the cut blocks' entries are zero, so growing reads holes, not stale data
    let v = b.0.read();
    assert!(v[entry_offset(11) as usize..entry_offset(100) as usize]
        .iter()
        .all(|&x| x == 0));
    drop(v);
    let size = truncate(&c, &b, size, 100 * BLOCK);
    let all = read_all(&c, &b, size).unwrap();
    let kept = 10 * BLOCK as usize + 5;
    assert_eq!(&all[..kept], &data[..kept]);
    assert!(all[kept..].iter().all(|&x| x == 0));
    assert_eq!(c.verify(&b, size).unwrap(), Vec::<u64>::new());
}

#[test]
fn truncate_to_zero_and_regrow() {
    let c = codec();
    let b = empty_backing();
    let size = c.write(&b, 0, 0, &bytes(13, 150 * BLOCK as usize + 7)).unwrap();
    let size = truncate(&c, &b, size, 0);
    assert_eq!(b.len().unwrap(), HEADER_LEN);
    assert_eq!(read_all(&c, &b, size).unwrap(), Vec::<u8>::new());
    assert_eq!(c.verify(&b, size).unwrap(), Vec::<u64>::new());
    let size = truncate(&c, &b, size, 130 * BLOCK + 1);
    assert!(read_all(&c, &b, size).unwrap().iter().all(|&x| x == 0));
    let size = c.write(&b, size, 3, b"abc").unwrap();
    let all = read_all(&c, &b, size).unwrap();
    assert_eq!(&all[..6], b"\0\0\0abc");
    assert!(all[6..].iter().all(|&x| x == 0));
    // no-op truncates
    let size = truncate(&c, &b, size, size);
    let size = truncate(&c, &b, size, 0);
    assert_eq!(truncate(&c, &b, size, 0), 0);
}

// ---------------------------------------------------------------------------------
// Failures while growing, on a [`Probe`]
// ---------------------------------------------------------------------------------

#[test]
fn a_refused_grow_changes_nothing() {
    let c = codec();
    let data = bytes(14, 5000);
    let mem = empty_backing();
    let size = c.write(&mem, 0, 0, &data).unwrap();
    let b = Probe::new(mem, usize::MAX, 1 << 30, false);
    // the short last block must grow, and the backing refuses the new length
    assert!(c.truncate(&b, size, 1 << 40).is_err());
    assert_eq!(b.len().unwrap(), backing_size(size));
    assert_eq!(read_all(&c, &b, size).unwrap(), data);
    assert!(c.write(&b, size, 1 << 31, b"x").is_err());
    assert_eq!(b.len().unwrap(), backing_size(size));
    assert_eq!(read_all(&c, &b, size).unwrap(), data);
    // what does fit still works
    c.truncate(&b, size, 3 * BLOCK).unwrap();
    let all = read_all(&c, &b, 3 * BLOCK).unwrap();
    assert_eq!(&all[..5000], &data[..]);
    assert!(all[5000..].iter().all(|&x| x == 0));
}

/// Writes that grow a file with a short last block by two groups, one starting inside
/// that block and one past it, fail at each of their backing writes in turn. Every
/// time, the backing length is the old one; the blocks before the old last block are
/// intact; the old last block either reads (its old bytes outside the write, old or
/// new ones inside) or, if the failure fell between its data and its entry, fails
/// authentication as a crash there would leave it; and growing the file afterwards
/// reads zeros past the old end, never stale blocks or EIO.
#[test]
fn a_failed_write_past_the_end_is_undone() {
    let c = codec();
    let old = bytes(15, (2 * G + 5000) as usize);
    let size = old.len() as u64;
    let last = size / BLOCK;
    let before = (last * BLOCK) as usize;
    let new = bytes(16, 2 * G as usize);
    for off in [size - 500, size + 3 * BLOCK] {
        for direct in [false, true] {
            for n in 0.. {
                let mem = empty_backing();
                c.write(&mem, 0, 0, &old).unwrap();
                let b = &Probe::new(mem, n, u64::MAX, direct);
                if c.write(b, size, off, &new).is_ok() {
                    assert!(n >= 6, "a write of two groups makes at least 6 backing writes");
                    break;
                }
                let case = format!("write at {off}, direct {direct}, failing write {n}");
                assert_eq!(b.len().unwrap(), backing_size(size), "{case}");
                assert_eq!(
                    read_range(&c, b, size, 0, before).unwrap(),
                    &old[..before],
                    "{case}"
                );
                let tail = match read_range(&c, b, size, before as u64, size as usize - before) {
                    Ok(tail) => tail,
                    Err(e) => {
                        assert_corrupt(Err::<(), _>(e), last);
                        continue;
                    }
                };
                for (i, &x) in tail.iter().enumerate() {
                    let at = before + i;
                    let written = (at as u64).checked_sub(off).map(|k| new[k as usize]);
                    assert!(x == old[at] || Some(x) == written, "{case}: byte {at}");
                }
                let grown = size + 3 * G;
                c.truncate(b, size, grown).unwrap();
                let past = read_range(&c, b, grown, size, 3 * G as usize).unwrap();
                assert!(past.iter().all(|&x| x == 0), "{case}");
            }
        }
    }
}
