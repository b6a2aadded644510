//! ezfs: a stacked FUSE filesystem with HDFS-style encryption zones.
//!
//! The library is layered so that everything but the FUSE adapter ([`fs`]) and the
//! command line ([`cli`]) is pure logic, testable without a mount:
//! - [`crypto`]: AES-256-GCM sealing, key wrapping, zeroizing key type;
//! - [`format`]: the encrypted file format (layout, header, block codec);

pub mod crypto;
pub mod format;
