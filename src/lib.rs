//! ezfs: a stacked FUSE filesystem with HDFS-style encryption zones.
//!
//! The library is layered so that everything but the FUSE adapter ([`fs::fuse`]) and
//! the command line ([`cli`]) is testable without a mount; each layer uses only the
//! ones below it (cli → control → fs, fsck → keys, zone → format → crypto, with
//! backdir beneath all that touch the backing dir):
//! - [`backdir`]: the backing directory as root touches it for users: descriptors,
//!   resolution beneath the root through no symlink, one tree walker;
//! - [`crypto`]: AES-256-GCM sealing, key wrapping, the zeroizing key type;
//! - [`format`](mod@format): the encrypted file format (layout, header, block codec);
//! - [`keys`]: the key-provider interface, the passphrase-sealed local keystore, and
//!   the small interface a mount holds ([`keys::ZoneKeys`]);
//! - [`zone`]: zone markers and the boundary rules;
//! - [`fs`]: the filesystem: a core that decides (zones, key users, encryption,
//!   jobs) and runs without a kernel, under the FUSE adapter [`fs::fuse`] that only
//!   translates; [`control`]: the socket the CLI uses to reach a mount;
//! - [`fsck`]: offline verification of every header and block;
//! - [`cli`]: the `ezfs` command.

#![deny(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod backdir;
pub mod cli;
pub mod control;
pub mod crypto;
pub mod format;
pub mod fs;
pub mod fsck;
pub mod keys;
pub mod text;
pub mod zone;

/// Name of the directory in the backing dir that holds config and keystore; it is
/// hidden from the mount.
pub const EZFS_DIR: &str = ".ezfs";
