//! The filesystem: a stacked filesystem over the backing directory.
//!
//! Outside zones it passes everything through. Inside a zone, regular files' contents
//! go through [`encfile::EncFile`] (header, DEK, block codec); names, sizes, modes and
//! times stay visible, as in HDFS, unless the zone encrypts names too (`names`). Zone boundaries are enforced here: rename and link
//! across them get EXDEV. The zone marker and `.ezfs` are hidden and reserved.
//!
//! Two layers:
//! - [`fuse`] translates fuser's requests and replies, and nothing else;
//! - the core ([`Core`]) decides: it takes a [`Caller`](crate::backdir::Caller) and
//!   plain values, answers with the types of [`types`] or an [`FsError`], and can be
//!   driven without a kernel (see `tests/core.rs`).
//!
//! The core's modules, by job:
//! - [`core`](mod@core): the shared state, nodes and handles, attributes;
//! - `namespace`, `files`, `dirs`, `xattrs`: the operations;
//! - [`names`]: the one place where names in the mount meet names in the backing dir
//!   (encrypted there in zones that encrypt names), with `dirfiles` (the diriv and
//!   long-name files such zones keep in each directory);
//! - [`error`]: what goes wrong, and its errno;
//! - [`inode`], `export`: the node table, and file handles that outlive it;
//! - [`encfile`] (with `direct`, `readaround`, `writebehind`): an open encrypted file;
//! - [`zones`]: which directories are zones; [`zonereq`]: the zone requests of the
//!   control socket; [`reencrypt`], [`jobs`], `rekey`: re-encryption jobs;
//! - `atime`, `root_mode`, [`stats`]: access times, the root's mode, counters.

pub mod applocks;
mod atime;
pub mod core;
mod direct;
pub mod dirfiles;
mod dirs;
pub mod encfile;
pub mod error;
mod export;
mod files;
pub mod fuse;
pub mod inode;
pub mod jobs;
mod namejob;
pub mod names;
mod namespace;
mod readaround;
pub mod reencrypt;
mod rekey;
mod root_mode;
mod sharedlock;
pub mod stats;
pub mod types;
mod writebehind;
mod xattrs;
pub mod zonereq;
pub mod zones;

pub use self::core::{Core, Invalidate};
pub use atime::{is_option as atime_option, Policy as AtimePolicy};
pub use error::{FsError, FsResult};
pub use fuse::EzFs;
pub use types::{Allocate, Attr, DirEntry, FileKind, Opened, SetAttr, SetTime, StatFs};
