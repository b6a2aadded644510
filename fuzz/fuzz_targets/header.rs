//! Header parser: any bytes either parse or give a HeaderError, never a panic; a
//! parsed header encodes back to the same 4096 bytes (the parser accepts nothing that
//! the encoder would not write).
#![no_main]

use ezfs::format::Header;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = Header::decode(data) {
        assert_eq!(h.encode(), data[..4096], "decode/encode round trip");
        let _ = format!("{h:?}");
    }
});
