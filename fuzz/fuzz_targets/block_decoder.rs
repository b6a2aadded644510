//! Block decoder: arbitrary bytes as the backing file of an encrypted file (after a
//! valid header), read through the codec at fuzzer-chosen offsets. Every read either
//! returns plaintext or a CodecError, never a panic; a hole (all zeros) reads as zeros.
#![no_main]

use ezfs::crypto::Key;
use ezfs::format::layout::{plain_size, HEADER_LEN};
use ezfs::format::{BlockCodec, MemBacking};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // first 8 bytes choose the read; the rest is the backing file past the header
    if data.len() < 8 {
        return;
    }
    let (sel, body) = data.split_at(8);
    let off = u32::from_le_bytes(sel[..4].try_into().unwrap()) as u64;
    let len = (u32::from_le_bytes(sel[4..].try_into().unwrap()) % (1 << 20)) as usize;
    let mut file = vec![0u8; HEADER_LEN as usize];
    file.extend_from_slice(body);
    let backing_len = file.len() as u64;
    let backing = MemBacking(file.into());
    let codec = BlockCodec::new(&Key::from_slice(&[7u8; 32]).unwrap(), [9u8; 16]);
    let size = plain_size(backing_len).expect("at least a header");
    let mut out = vec![0xAAu8; len];
    match codec.read(&backing, size, off % (size + 1 + 8192), &mut out) {
        Ok(n) => {
            assert!(n <= len);
            // random bytes never authenticate, so what was read came from holes
            assert!(out[..n].iter().all(|&b| b == 0), "non-hole bytes authenticated");
        }
        Err(_) => {}
    }
    let _ = codec.verify(&backing, size);
});
