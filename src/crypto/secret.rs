//! Memory for key material: kept out of core dumps, locked in RAM where the limit
//! allows, and zeroed when freed.
//!
//! Keys and the AES key schedules built from them (whose first round keys are the key
//! itself) live in slots of a few dedicated regions mapped for the purpose:
//! `MADV_DONTDUMP` leaves them out of any core dump and `mlock` keeps them out of swap
//! (best effort: an unprivileged daemon may lack the limit). A slot is zeroed when its
//! value is dropped and reused afterwards; regions are never unmapped, so the memory
//! held is the peak of keys alive at once (one schedule per open encrypted file).
//!
//! A value built on the stack and moved in leaves a copy in a dead stack frame:
//! [`scrub_stack`] overwrites that area after the few operations that build keys.

use parking_lot::Mutex;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use zeroize::Zeroize;

/// Bytes mapped at a time for one slot size.
const REGION: usize = 64 * 1024;
/// Slot sizes: a key, and a cipher's key schedule (ring 544 bytes, RustCrypto 624).
const SIZES: [usize; 2] = [64, 1024];
/// Largest alignment a slot gives (every slot size is a multiple of it).
const ALIGN: usize = 64;

/// Free slots of each size, as addresses.
static FREE: Mutex<[Vec<usize>; 2]> = Mutex::new([Vec::new(), Vec::new()]);

fn class_of(size: usize, align: usize) -> usize {
    assert!(align <= ALIGN, "secret memory aligns to {ALIGN} bytes");
    SIZES
        .iter()
        .position(|&s| size <= s)
        .unwrap_or_else(|| panic!("no secret slot holds {size} bytes"))
}

/// Maps a new region for slots of `SIZES[class]` bytes and adds them to `free`.
fn grow(class: usize, free: &mut Vec<usize>) {
    // SAFETY: an anonymous private mapping, checked below; nothing else refers to it.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            REGION,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert!(p != libc::MAP_FAILED, "cannot map memory for keys");
    // SAFETY: advice and locking on the region just mapped; failures only lose the
    // protection (a core dump cannot include it when the process is not dumpable,
    // which the daemon arranges as well).
    unsafe {
        libc::madvise(p, REGION, libc::MADV_DONTDUMP);
        libc::mlock(p, REGION);
    }
    let size = SIZES[class];
    free.extend((0..REGION / size).rev().map(|i| p as usize + i * size));
}

fn alloc(size: usize, align: usize) -> NonNull<u8> {
    let class = class_of(size, align);
    let mut free = FREE.lock();
    if free[class].is_empty() {
        grow(class, &mut free[class]);
    }
    let addr = free[class].pop().expect("a region was just added");
    NonNull::new(addr as *mut u8).expect("mapped memory is not null")
}

/// Zeroes and frees a slot from [`alloc`].
///
/// # Safety
/// `p` came from `alloc(size, align)` and nothing uses it any more.
unsafe fn free(p: NonNull<u8>, size: usize, align: usize) {
    let class = class_of(size, align);
    // SAFETY: the slot is SIZES[class] bytes of our mapping, no longer in use.
    unsafe { std::slice::from_raw_parts_mut(p.as_ptr(), SIZES[class]) }.zeroize();
    FREE.lock()[class].push(p.as_ptr() as usize);
}

/// A value in secret memory (see the module doc): dropped in place, then zeroed.
pub struct Secret<T> {
    ptr: NonNull<T>,
}

// SAFETY: a Secret owns its value like a Box does.
unsafe impl<T: Send> Send for Secret<T> {}
// SAFETY: as above; shared access only gives &T.
unsafe impl<T: Sync> Sync for Secret<T> {}

impl<T> Secret<T> {
    /// Moves `value` into secret memory. Its bytes may stay in the caller's stack
    /// frame: build keys in place where possible, or call [`scrub_stack`] after.
    pub fn new(value: T) -> Secret<T> {
        let p = alloc(std::mem::size_of::<T>(), std::mem::align_of::<T>()).cast::<T>();
        // SAFETY: a fresh slot, large and aligned enough for T.
        unsafe { p.as_ptr().write(value) };
        Secret { ptr: p }
    }
}

impl<T> Deref for Secret<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the slot holds a live T for as long as self exists.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> DerefMut for Secret<T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in deref; &mut self gives exclusive access.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T> Drop for Secret<T> {
    fn drop(&mut self) {
        // SAFETY: the slot holds a live T, dropped once here; then the slot is zeroed
        // and freed, and never used by this value again.
        unsafe {
            std::ptr::drop_in_place(self.ptr.as_ptr());
            free(
                self.ptr.cast(),
                std::mem::size_of::<T>(),
                std::mem::align_of::<T>(),
            );
        }
    }
}

/// Overwrites the stack below the caller's frame, where the functions it just called
/// left copies of key bytes (a key schedule built and returned by value, say).
#[inline(never)]
pub fn scrub_stack() {
    let mut area = [0u8; 16 * 1024];
    area.zeroize();
    std::hint::black_box(&area);
}

/// Keeps this process out of core dumps and `ptrace` by other users
/// (`PR_SET_DUMPABLE` 0): its memory holds keys.
pub fn no_core_dumps() {
    // SAFETY: a prctl with no pointers.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_zeroed_and_reused_and_left_out_of_dumps() {
        let a = Secret::new([0xA5u8; 32]);
        let addr = &*a as *const [u8; 32] as usize;
        assert_eq!(*a, [0xA5; 32]);
        assert_eq!(addr % ALIGN, 0);
        drop(a);
        // SAFETY: the slot is still mapped (regions are never unmapped); reading it
        // checks the drop zeroed it.
        let after = unsafe { std::slice::from_raw_parts(addr as *const u8, 32) };
        assert!(after.iter().all(|&b| b == 0));
        let b = Secret::new([1u8; 32]);
        assert_eq!(&*b as *const [u8; 32] as usize, addr, "the slot is reused");
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        let mut flags = String::new();
        for l in smaps.lines() {
            if let Some((range, _)) = l.split_once(' ') {
                if let Some((lo, hi)) = range.split_once('-') {
                    if let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16)) {
                        inside = (lo..hi).contains(&addr);
                        continue;
                    }
                }
            }
            if inside && l.starts_with("VmFlags:") {
                flags = l.to_owned();
            }
        }
        assert!(flags.contains(" dd"), "not left out of dumps: {flags:?}");
        let big = Secret::new([7u64; 100]);
        assert_eq!(big[99], 7);
    }
}
