//! The on-disk format of encrypted files: layout math, header, block codec.
//! No FUSE and no key storage here: everything is testable on an in-memory file.

pub mod backing;
pub mod codec;
#[cfg(test)]
pub mod crash;
pub mod header;
pub mod hints;
pub mod layout;
pub mod metacache;
pub mod names;

pub use backing::{Backing, MemBacking, Storage};
pub use codec::{BlockCodec, CodecError};
pub use header::{Header, HeaderError};
pub use hints::{Around, Hints};
pub use metacache::{CachedMeta, MetaCache};
