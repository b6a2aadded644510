use super::*;
use crate::format::backing::MemBacking;

fn codec() -> BlockCodec {
    BlockCodec::new(&Key::random(), [7u8; 16])
}

#[test]
fn write_then_read_small() {
    let c = codec();
    let b = MemBacking::default();
    b.set_len(HEADER_LEN).unwrap();
    let size = c.write(&b, 0, 0, b"hello").unwrap();
    assert_eq!(size, 5);
    assert_eq!(b.len().unwrap(), backing_size(5));
    let mut out = [0u8; 10];
    assert_eq!(c.read(&b, size, 0, &mut out).unwrap(), 5);
    assert_eq!(&out[..5], b"hello");
}
