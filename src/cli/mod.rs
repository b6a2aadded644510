//! The `ezfs` command line: its arguments, and each command (init, mount and umount,
//! status, key, zone, fsck, passwd, keystore, the `mount.fuse.ezfs` helper) in its own
//! module. Each is a thin layer over the library; errors are one sentence on stderr,
//! exit 1 for a failed operation and 2 for a usage error.

mod backing;
mod fsckcmd;
mod helper;
mod initcmd;
mod keycmd;
mod keystorecmd;
mod logger;
mod mount;
pub mod mountinfo;
mod passwdcmd;
mod shared;
mod statuscmd;
mod users;
mod zonecmd;
mod zonefix;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Test-only: a directory where the mount daemon may leave a core dump (it then stays
/// dumpable, with no core size limit, and runs there), so that a test can check that
/// no key material is in it.
pub const TEST_CORE_DIR: &str = "EZFS_TEST_CORE_DIR";

/// A failed command: the message for stderr and the exit code.
#[derive(Debug)]
pub struct Failure {
    /// The exit status: 1 when the operation failed, 2 for a usage error.
    pub code: i32,
    /// The message for stderr; empty when the command already said what is wrong.
    pub msg: String,
}

impl Failure {
    /// An operation that failed (exit 1).
    pub fn op(msg: impl std::fmt::Display) -> Failure {
        Failure {
            code: 1,
            msg: msg.to_string(),
        }
    }
    /// A usage error (exit 2).
    pub fn usage(msg: impl std::fmt::Display) -> Failure {
        Failure {
            code: 2,
            msg: msg.to_string(),
        }
    }
}

impl From<crate::keys::KeyError> for Failure {
    fn from(e: crate::keys::KeyError) -> Failure {
        Failure::op(e)
    }
}

impl From<crate::control::ClientError> for Failure {
    fn from(e: crate::control::ClientError) -> Failure {
        // "not mounted" because the mount's daemon died: say that, and the way out
        if let crate::control::ClientError::NotMounted(b) = &e {
            if let Some(m) = mountinfo::dead_mounts().into_iter().find(|m| &m.backing == b) {
                return Failure::op(mountinfo::dead_message(&m));
            }
        }
        Failure::op(e)
    }
}

/// What a command returns: done, or the failure to report.
pub type CliResult = Result<(), Failure>;

/// The `ezfs` command line.
#[derive(Parser, Debug)]
#[command(
    name = "ezfs",
    version,
    about = "Transparent encryption zones for a local directory, through FUSE",
    long_about = "ezfs stacks on a backing directory. Outside encryption zones files pass through \
                  unchanged; inside a zone every file's contents are encrypted with its own data key \
                  (AES-256-GCM), wrapped by the zone's key.\n\nThe passphrase comes from \
                  --passphrase-file, the EZFS_PASSPHRASE_FILE environment variable, or a prompt on the \
                  terminal; never from an argument.\n\nExit status: 0 success, 1 the operation failed, \
                  2 usage error."
)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Where the passphrase comes from (shared by commands that unlock the keystore).
#[derive(clap::Args, Debug, Clone)]
pub struct PassArgs {
    /// Read the passphrase from this file (first line); default: $EZFS_PASSPHRASE_FILE or a prompt.
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create BACKING/.ezfs: the keystore, sealed by a new passphrase (asked twice).
    Init {
        /// The backing directory (created if missing; must be empty).
        backing: PathBuf,
        #[command(flatten)]
        pass: PassArgs,
        /// Keep zone keys in an external key provider: exec:PROGRAM [ARGS…] (a program speaking
        /// ezfs's JSON line protocol, see ezfs(1)), or a KMIP key manager:
        /// kmip://HOST:PORT[,HOST:PORT…]?ca=PEM&cert=PEM&key=PEM[&timeout=SECS] (absolute
        /// paths; the zone keys never leave it). Default: the local keystore.
        #[arg(long, value_name = "exec:PROGRAM|kmip://…")]
        key_provider: Option<String>,
        /// Write the recovery key (which opens the keystore when the passphrase is lost)
        /// to this new file (mode 0600) instead of printing it once.
        #[arg(long, value_name = "FILE", conflicts_with = "no_recovery_key")]
        recovery_key_file: Option<PathBuf>,
        /// Make no recovery key: a lost passphrase then loses every zone.
        #[arg(long)]
        no_recovery_key: bool,
    },
    /// Mount BACKING at MOUNTPOINT (runs in the background unless --foreground).
    Mount(mount::MountArgs),
    /// Unmount an ezfs mount cleanly (fusermount3 -u works too).
    Umount { mountpoint: PathBuf },
    /// Show every ezfs mount (or the one at MOUNTPOINT): backing dir, daemon and
    /// whether it is alive, zones, jobs and counters since mount.
    Status {
        mountpoint: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Manage zone keys.
    #[command(subcommand)]
    Key(keycmd::KeyCmd),
    /// Manage encryption zones on a mounted ezfs.
    #[command(subcommand)]
    Zone(zonecmd::ZoneCmd),
    /// Authenticate every header and block in BACKING; report damage (exit 1 if any).
    Fsck {
        backing: std::path::PathBuf,
        #[command(flatten)]
        pass: PassArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Move damaged files into lost+found inside their zone (nothing is deleted).
        #[arg(long)]
        quarantine: bool,
    },
    /// Change the passphrase of BACKING's keystore (no data is rewritten), or with
    /// --rotate-master give the keystore a new master key.
    Passwd {
        backing: PathBuf,
        /// The current passphrase (--passphrase-file, $EZFS_PASSPHRASE_FILE or a prompt).
        #[command(flatten)]
        pass: PassArgs,
        /// Read the new passphrase from this file; default: a prompt (asked twice). Never
        /// taken from --passphrase-file or $EZFS_PASSPHRASE_FILE.
        #[arg(long, value_name = "FILE")]
        new_passphrase_file: Option<PathBuf>,
        /// Generate a new master key: every key version is sealed again and every zone
        /// marker authenticated again under it (not while mounted). Keeps the passphrase
        /// unless --new-passphrase-file is given.
        #[arg(long, conflicts_with = "recovery_key_file")]
        rotate_master: bool,
        /// Open the keystore with the recovery key in this file instead of the current
        /// passphrase (which was lost), and set a new passphrase.
        #[arg(long, value_name = "FILE")]
        recovery_key_file: Option<PathBuf>,
    },
    /// Back up or check the sealed keystore.
    #[command(subcommand)]
    Keystore(keystorecmd::KeystoreCmd),
    /// Print the shell completion script for bash, zsh or fish on standard output.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Runs as `mount.fuse.ezfs` (the `mount(8)` helper, see the `helper` module);
/// returns the exit code.
pub fn mount_helper(args: Vec<std::ffi::OsString>) -> i32 {
    logger::init();
    if std::env::var_os(TEST_CORE_DIR).is_none() {
        crate::crypto::secret::no_core_dumps();
    }
    helper::run(args)
}

/// Parses the arguments, runs the command, returns the exit code.
pub fn run() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    logger::init();
    // a listing piped into `head` ends quietly when the pipe closes, like any Unix
    // tool (Rust ignores SIGPIPE, and a print to a closed pipe would panic); the mount
    // daemon keeps ignoring it, so that a control client going away cannot kill it
    if !matches!(cli.cmd, Cmd::Mount(_)) {
        // SAFETY: restores the default disposition of one signal; no handler involved.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    // every ezfs process may hold keys: none is dumped or traced by other users
    // (a test that checks what a core dump holds asks for one with EZFS_TEST_CORE_DIR)
    if std::env::var_os(TEST_CORE_DIR).is_none() {
        crate::crypto::secret::no_core_dumps();
    }
    let res = match cli.cmd {
        Cmd::Init {
            backing,
            pass,
            key_provider,
            recovery_key_file,
            no_recovery_key,
        } => initcmd::init(
            &backing,
            &pass,
            key_provider.as_deref(),
            (!no_recovery_key).then_some(recovery_key_file.as_deref()),
        ),
        Cmd::Mount(args) => mount::mount(args),
        Cmd::Umount { mountpoint } => mount::umount(&mountpoint),
        Cmd::Status { mountpoint, json } => statuscmd::run(mountpoint.as_deref(), json),
        Cmd::Key(k) => keycmd::run(k),
        Cmd::Zone(z) => zonecmd::run(z),
        Cmd::Fsck {
            backing,
            pass,
            json,
            quarantine,
        } => fsckcmd::run(&backing, &pass, json, quarantine),
        Cmd::Passwd {
            backing,
            pass,
            new_passphrase_file,
            rotate_master,
            recovery_key_file,
        } => match recovery_key_file {
            Some(rk) => passwdcmd::passwd_recovered(&backing, &rk, new_passphrase_file.as_deref()),
            None => passwdcmd::passwd(&backing, &pass, new_passphrase_file.as_deref(), rotate_master),
        },
        Cmd::Keystore(k) => keystorecmd::run(k),
        Cmd::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "ezfs", &mut std::io::stdout());
            Ok(())
        }
    };
    match res {
        Ok(()) => 0,
        Err(f) => {
            if !f.msg.is_empty() {
                // the errno's words once, without Rust's " (os error N)" after them
                eprintln!("ezfs: {}", crate::text::strip_os_error(&f.msg));
            }
            f.code
        }
    }
}
