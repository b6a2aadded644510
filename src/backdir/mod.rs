//! The backing directory as the daemon and the root commands touch it on users' behalf.
//!
//! ezfs runs as root for users who may write parts of the backing dir (through the
//! mount, or directly), so every name it resolves for them goes through here:
//! - [`sys`]: thin wrappers over the `*at` system calls, on descriptors, never paths;
//! - [`resolve`]: a path beneath a directory descriptor that stays beneath it and
//!   follows no symlink (`openat2`), small control files read without following links
//!   or blocking on FIFOs, and files replaced through a directory descriptor with an
//!   unpredictable, exclusively created temporary name;
//! - [`walk`]: one tree walker over descriptors, for every walk of the backing dir;
//! - [`ofd`]: byte-range locks of one open of a backing file, for several daemons
//!   sharing a backing dir (`--shared-storage`);
//! - [`caller`]: work done with a user's file-system identity, so the kernel checks
//!   that user's permissions, not root's.

pub mod caller;
pub mod ofd;
pub mod resolve;
pub mod sys;
pub mod walk;

pub use caller::Caller;
