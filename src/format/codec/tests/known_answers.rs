//! Known answers: these pin the format. If one fails, the on-disk format changed.

use super::*;
use crate::crypto::AuthError;
use crate::text::hex;

const KAT_KEY: [u8; 32] = [0x11; 32];
const KAT_FILE_ID: [u8; 16] = *b"ezfs-kat-file-id";
const KAT_NONCE: [u8; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];

/// The documented associated data of a block: file id (16 bytes) || block index (u64 LE).
fn documented_aad(file_id: &[u8; 16], block: u64) -> Vec<u8> {
    let mut a = file_id.to_vec();
    a.extend_from_slice(&block.to_le_bytes());
    a
}

fn unhex(s: &str) -> Vec<u8> {
    crate::text::unhex_vec(s).unwrap()
}

/// Plaintext of the full-block vector: bytes 0, 1, .., 255, 0, 1, ...
fn kat_block() -> Vec<u8> {
    (0..BLOCK).map(|i| i as u8).collect()
}

/// Full block 1 (a realistic position): first 32 ciphertext bytes and the tag.
const KAT1_CT_PREFIX: &str = "13e2b4107fa633f31cb1d994c8a2f929d9b0127b01604438b1f9a564e15d7d31";
const KAT1_TAG: &str = "0fa3ce24e52d6cc53f79144885343bbb";
/// A short block at an index using all eight bytes of the u64 (catches width/endianness).
const KAT2_BLOCK: u64 = 0x0807_0605_0403_0201;
const KAT2_PLAIN: &[u8] = b"ezfs known-answer block";
const KAT2_CT: &str = "7699d0605bc85b9b63d6fefeaadc8043bb8162047a1639";
const KAT2_TAG: &str = "163db73a22d17220bfa5eee7336f3237";

#[test]
fn aes_gcm_reference_vector() {
    // The GCM specification's test case 14 (AES-256, zero key and IV, one zero block):
    // anchors the cipher itself, independently of anything ezfs chooses.
    let c = Key::from_slice(&[0; 32]).unwrap().cipher();
    let mut buf = [0u8; 16];
    let tag = c.seal_with_nonce(&[0; 12], &[], &mut buf);
    assert_eq!(hex(&buf), "cea7403d4d606b6e074ec5d3baf39d18");
    assert_eq!(hex(&tag), "d0d1c8a799996bf0265b98b5d48ab919");
}

#[test]
fn known_answer_vectors() {
    let cipher = Key::from_slice(&KAT_KEY).unwrap().cipher();
    let mut buf = kat_block();
    let tag = cipher.seal_with_nonce(&KAT_NONCE, &documented_aad(&KAT_FILE_ID, 1), &mut buf);
    assert_eq!(hex(&buf[..32]), KAT1_CT_PREFIX);
    assert_eq!(hex(&tag), KAT1_TAG);

    let mut buf = KAT2_PLAIN.to_vec();
    let tag = cipher.seal_with_nonce(&KAT_NONCE, &documented_aad(&KAT_FILE_ID, KAT2_BLOCK), &mut buf);
    assert_eq!(hex(&buf), KAT2_CT);
    assert_eq!(hex(&tag), KAT2_TAG);
}

/// The codec opens the known-answer blocks: its associated data is the documented one.
#[test]
fn codec_opens_known_answer_blocks() {
    let c = BlockCodec::new(&Key::from_slice(&KAT_KEY).unwrap(), KAT_FILE_ID);
    let mut entry = KAT_NONCE.to_vec();
    entry.extend_from_slice(&unhex(KAT2_TAG));
    let mut buf = unhex(KAT2_CT);
    c.open_block(KAT2_BLOCK, &entry, &mut buf).unwrap();
    assert_eq!(buf, KAT2_PLAIN);
    // the same bytes at any other index, or under another file id, fail
    let mut buf = unhex(KAT2_CT);
    assert_corrupt(
        c.open_block(KAT2_BLOCK.swap_bytes(), &entry, &mut buf),
        KAT2_BLOCK.swap_bytes(),
    );
    let other = BlockCodec::new(&Key::from_slice(&KAT_KEY).unwrap(), [0; 16]);
    let mut buf = unhex(KAT2_CT);
    assert_corrupt(other.open_block(KAT2_BLOCK, &entry, &mut buf), KAT2_BLOCK);
}

/// Installs the full-block vector at block 1 of a backing file by hand (entry = nonce ||
/// tag at `entry_offset`, ciphertext at `data_offset`): the codec reads it back, which
/// pins the layout together with the cipher and associated data.
#[test]
fn codec_reads_hand_made_known_answer_file() {
    let cipher = Key::from_slice(&KAT_KEY).unwrap().cipher();
    let mut ct = kat_block();
    let tag = cipher.seal_with_nonce(&KAT_NONCE, &documented_aad(&KAT_FILE_ID, 1), &mut ct);
    assert_eq!(hex(&tag), KAT1_TAG);

    let size = 2 * BLOCK; // block 0 a hole, block 1 the vector
    let b = MemBacking::default();
    b.set_len(backing_size(size)).unwrap();
    b.write_at(&ct, 3 * BLOCK).unwrap(); // data_offset(1): header, meta 0, data 0
    b.write_at(&KAT_NONCE, HEADER_LEN + ENTRY_LEN).unwrap(); // entry_offset(1)
    b.write_at(&tag, HEADER_LEN + ENTRY_LEN + 12).unwrap();
    assert_eq!(
        (data_offset(1), entry_offset(1)),
        (3 * BLOCK, HEADER_LEN + ENTRY_LEN)
    );

    let c = BlockCodec::new(&Key::from_slice(&KAT_KEY).unwrap(), KAT_FILE_ID);
    let all = read_all(&c, &b, size).unwrap();
    assert!(all[..BLOCK as usize].iter().all(|&x| x == 0));
    assert_eq!(&all[BLOCK as usize..], &kat_block()[..]);
    assert_eq!(c.verify(&b, size).unwrap(), Vec::<u64>::new());
}

/// The other direction: a block the codec wrote opens by hand with `Cipher::open`, the
/// entry read at `entry_offset` and the documented associated data.
#[test]
fn codec_writes_documented_format() {
    let key = Key::from_slice(&KAT_KEY).unwrap();
    let c = BlockCodec::new(&key, KAT_FILE_ID);
    let b = empty_backing();
    let block = 130; // second group, so the entry sits in metadata block 1
    let plain = bytes(14, BLOCK as usize + 33); // blocks 130 (full) and 131 (short)
    let size = c.write(&b, 0, block * BLOCK, &plain).unwrap();
    assert_eq!(size, 131 * BLOCK + 33);

    let v = b.0.read();
    for (i, want) in [
        (block, &plain[..BLOCK as usize]),
        (block + 1, &plain[BLOCK as usize..]),
    ] {
        let at = entry_offset(i) as usize;
        let nonce: [u8; 12] = v[at..at + 12].try_into().unwrap();
        let tag: [u8; 16] = v[at + 12..at + 28].try_into().unwrap();
        let at = data_offset(i) as usize;
        let ct = &v[at..at + want.len()];
        assert_ne!(ct, want);
        let mut buf = ct.to_vec();
        key.cipher()
            .open(&nonce, &tag, &documented_aad(&KAT_FILE_ID, i), &mut buf)
            .unwrap();
        assert_eq!(buf, want);
        // and not under another index
        let mut buf = ct.to_vec();
        assert_eq!(
            key.cipher()
                .open(&nonce, &tag, &documented_aad(&KAT_FILE_ID, i + 1), &mut buf),
            Err(AuthError)
        );
    }
    // all other entries of the file are zero (holes)
    for i in (0..block).chain([block + 2]) {
        let at = entry_offset(i) as usize;
        assert!(
            v.get(at..at + ENTRY_LEN as usize)
                .is_none_or(|e| e.iter().all(|&x| x == 0)),
            "entry {i}"
        );
    }
}
