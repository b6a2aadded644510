//! `ezfs mount` and `ezfs umount`: unlock, mount, daemonize, unmount on signals.
//!
//! The parent process checks everything it can (paths, passphrase, zone markers)
//! before forking, and returns only once the child reports the mount usable or
//! failed, so scripts can use the mount as soon as `ezfs mount` exits 0 and a failure
//! leaves nothing half-mounted.

use super::{mountinfo, shared, CliResult, Failure, PassArgs};
use crate::control::{self, MountInfo, Probe, Request, Server};
use crate::fs::{Core, EzFs};
use crate::keys::keystore::read_body;
use crate::keys::{passphrase, Keystore, LocalProvider};
use fuser::{Config, MountOption, SessionACL};
use std::io::{Read, Write};
use std::ops::Not;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct MountArgs {
    /// The backing directory (made with `ezfs init`).
    pub(super) backing: PathBuf,
    /// An empty directory to mount on.
    pub(super) mountpoint: PathBuf,
    /// Mount read-only.
    #[arg(long)]
    pub(super) read_only: bool,
    /// Let other users use the mount (their access still follows file modes); the
    /// same as -o allow_other.
    #[arg(long)]
    pub(super) allow_other: bool,
    /// Plain files (outside zones) do their I/O in the kernel (FUSE passthrough), at
    /// the backing disk's speed; the kernel then gives no writeback cache, so small
    /// writes to files in zones are slower. The same as -o passthrough.
    #[arg(long)]
    pub(super) passthrough: bool,
    /// Zones whose key is in a KMS: fresh wrapped data keys kept ready per key version,
    /// so creates do not wait for the KMS (default 500; 0: none). The same as
    /// -o edek_pool=N.
    #[arg(long, value_name = "N")]
    pub(super) edek_pool: Option<usize>,
    /// Refill the EDEK pool in the background when it falls below this percentage
    /// (default 30). The same as -o edek_pool_low=PCT.
    #[arg(long, value_name = "PCT")]
    pub(super) edek_pool_low: Option<u32>,
    /// Keep the data keys of files in KMS zones for this many seconds after use, so
    /// that reopening a file costs no KMS round trip (default 30; 0: not kept). The
    /// same as -o dek_cache_ttl=SECS.
    #[arg(long, value_name = "SECS")]
    pub(super) dek_cache_ttl: Option<u64>,
    /// Several hosts (or daemons) serve this backing dir, on a shared file system:
    /// nothing another host may change is trusted from memory, writes lock what they
    /// change on the backing files, and applications' locks are forwarded to them.
    /// Recorded in the backing dir: every later mount of it shares it too. The same
    /// as -o shared_storage.
    #[arg(long)]
    pub(super) shared_storage: bool,
    /// How long the kernel may cache names and attributes, in seconds (default 1; 0
    /// on shared storage, where other hosts change them). The same as
    /// -o attr_timeout=SECS.
    #[arg(long, value_name = "SECS")]
    pub(super) attr_timeout: Option<f64>,
    /// FUSE mount options, comma-separated (e.g. -o noatime,nonempty).
    #[arg(short = 'o', value_name = "OPT")]
    pub(super) options: Vec<String>,
    /// Stay in the foreground (log to stderr) instead of daemonizing.
    #[arg(short = 'f', long)]
    pub(super) foreground: bool,
    #[command(flatten)]
    pub(super) pass: PassArgs,
}

impl MountArgs {
    /// Whether users other than the mounting one get in (then the kernel checks
    /// permissions: `default_permissions`).
    fn others_get_in(&self) -> bool {
        self.allow_other
            || self
                .fuse_options()
                .any(|o| o == "allow_other" || o == "allow_root")
    }

    /// Whether the mount was asked to share the backing dir (`--shared-storage`).
    fn shared_storage(&self) -> bool {
        self.shared_storage || self.fuse_options().any(|o| o == "shared_storage")
    }

    /// The kernel's cache lifetime of names and attributes, if given.
    fn attr_timeout(&self) -> Result<Option<Duration>, Failure> {
        let given = match self.attr_timeout {
            Some(t) => Some(t.to_string()),
            None => self
                .fuse_options()
                .filter_map(|o| o.strip_prefix("attr_timeout="))
                .last()
                .map(str::to_owned),
        };
        let Some(v) = given else {
            return Ok(None);
        };
        match v.parse::<f64>() {
            Ok(t) if (0.0..=3600.0).contains(&t) => Ok(Some(Duration::from_secs_f64(t))),
            _ => Err(Failure::usage(format!(
                "the attribute timeout is 0 to 3600 seconds, not '{v}'"
            ))),
        }
    }

    /// Whether plain files use FUSE passthrough (`--passthrough` or `-o passthrough`).
    fn passthrough(&self) -> bool {
        self.passthrough || self.fuse_options().any(|o| o == "passthrough")
    }

    /// The KMS client side's options, from the flags or their `-o` forms.
    fn kms_options(&self) -> Result<crate::keys::kms::KmsOptions, Failure> {
        let valued = |name: &str| -> Result<Option<u64>, Failure> {
            let prefix = format!("{name}=");
            match self.fuse_options().filter_map(|o| o.strip_prefix(&prefix)).last() {
                None => Ok(None),
                Some(v) => v
                    .parse()
                    .map(Some)
                    .map_err(|_| Failure::usage(format!("-o {name}= takes a whole number, not '{v}'"))),
            }
        };
        let mut k = crate::keys::kms::KmsOptions::default();
        if let Some(n) = self.edek_pool.map(|n| n as u64).or(valued("edek_pool")?) {
            k.pool.size = n as usize;
        }
        if let Some(p) = self.edek_pool_low.map(u64::from).or(valued("edek_pool_low")?) {
            if !(1..=100).contains(&p) {
                return Err(Failure::usage(format!(
                    "the EDEK pool's low mark is 1 to 100 (%), not {p}"
                )));
            }
            k.pool.low = p as f64 / 100.0;
        }
        if let Some(t) = self.dek_cache_ttl.or(valued("dek_cache_ttl")?) {
            k.dek_cache_ttl = Duration::from_secs(t);
        }
        Ok(k)
    }

    /// Every `-o` option, one by one (each `-o` may list several, comma-separated).
    fn fuse_options(&self) -> impl Iterator<Item = &str> {
        self.options.iter().flat_map(|s| s.split(','))
    }
}

/// Mount options ezfs knows: the kernel's mount flags, FUSE's own options, security
/// labels, and its own. Anything else is refused before mounting, with one line.
fn check_option(o: &str) -> Result<(), Failure> {
    const FLAGS: &[&str] = &[
        "ro",
        "rw",
        "dev",
        "nodev",
        "suid",
        "nosuid",
        "exec",
        "noexec",
        "sync",
        "async",
        "dirsync",
        "lazytime",
        "nolazytime",
        "nonempty",
        "allow_other",
        "allow_root",
        "default_permissions",
        "auto_unmount",
        "passthrough",
        "shared_storage",
    ];
    const VALUED: &[&str] = &[
        "attr_timeout=",
        "edek_pool=",
        "edek_pool_low=",
        "dek_cache_ttl=",
        "fsname=",
        "max_read=",
        "blksize=",
        "context=",
        "fscontext=",
        "defcontext=",
        "rootcontext=",
    ];
    if o.is_empty()
        || FLAGS.contains(&o)
        || crate::fs::atime_option(o)
        || VALUED.iter().any(|p| o.starts_with(p))
    {
        return Ok(());
    }
    Err(Failure::usage(format!(
        "unknown mount option '{}' (see -o in ezfs(1))",
        crate::text::shorten(o, 80)
    )))
}

/// Request loops: enough to overlap disk waits with crypto on a small machine.
const FUSE_THREADS: usize = 4;

fn canonical(p: &Path, what: &str) -> Result<PathBuf, Failure> {
    p.canonicalize()
        .map_err(|e| Failure::op(format!("{what} {}: {}", p.display(), crate::text::io_words(&e))))
}

/// A dead ezfs mount (its daemon gone) at `mnt`: one of this same backing dir is
/// cleared (detached) so that the mount can go ahead; another is reported with the
/// command that clears it.
fn clear_dead_mount(mnt: &Path, backing: &Path) -> CliResult {
    let Ok(abs) = std::path::absolute(mnt) else {
        return Ok(());
    };
    let Some(dead) = mountinfo::dead_mounts().into_iter().find(|m| m.mountpoint == abs) else {
        return Ok(());
    };
    if dead.backing != backing {
        return Err(Failure::op(mountinfo::dead_message(&dead)));
    }
    log::warn!(
        "the previous mount of {} at {} was dead (its daemon is gone); cleared it",
        backing.display(),
        abs.display()
    );
    lazy_unmount(&abs);
    Ok(())
}

fn mount_config(a: &MountArgs, backing: &Path) -> Config {
    let mut opts = vec![
        MountOption::FSName(backing.to_string_lossy().into_owned()),
        // as a kernel option, not fuser's Subtype (which only fusermount gets): the
        // kernel then lists the mount as type fuse.ezfs when the daemon mounts it itself
        MountOption::CUSTOM("subtype=ezfs".into()),
    ];
    if a.others_get_in() {
        // Other users' requests run with the daemon's rights: the kernel checks their
        // permissions first. Without it only the mounting user gets in, and the daemon
        // works with that user's rights, which the backing filesystem checks; the
        // kernel's checks would add a GETATTR of the directory to every create and
        // unlink (a changed directory's attributes are fetched again for the next one).
        opts.push(MountOption::DefaultPermissions);
    }
    if a.read_only {
        opts.push(MountOption::RO);
    }
    // the atime options are the daemon's to honour (FUSE inodes keep no atime), and
    // allow_other/allow_root are the session's access list (above)
    let daemons = |o: &str| {
        o.is_empty()
            || matches!(
                o,
                "nonempty"
                    | "allow_other"
                    | "allow_root"
                    | "default_permissions"
                    | "passthrough"
                    | "shared_storage"
            )
            || ["edek_pool=", "edek_pool_low=", "dek_cache_ttl=", "attr_timeout="]
                .iter()
                .any(|p| o.starts_with(p))
            || (crate::fs::atime_option(o) && o != "noatime")
    };
    for o in a.fuse_options().filter(|o| !daemons(o)) {
        opts.push(match o {
            "ro" => MountOption::RO,
            "rw" => MountOption::RW,
            "noatime" => MountOption::NoAtime,
            "atime" => MountOption::Atime,
            "nodev" => MountOption::NoDev,
            "dev" => MountOption::Dev,
            "nosuid" => MountOption::NoSuid,
            "suid" => MountOption::Suid,
            "noexec" => MountOption::NoExec,
            "exec" => MountOption::Exec,
            "sync" => MountOption::Sync,
            "async" => MountOption::Async,
            "dirsync" => MountOption::DirSync,
            other => MountOption::CUSTOM(other.into()),
        });
    }
    let mut c = Config::default();
    c.mount_options = opts;
    // -o allow_other is --allow-other; -o allow_root lets root in too
    c.acl = if a.allow_other || a.fuse_options().any(|o| o == "allow_other") {
        SessionACL::All
    } else if a.fuse_options().any(|o| o == "allow_root") {
        SessionACL::RootAndOwner
    } else {
        SessionACL::Owner
    };
    c.n_threads = Some(FUSE_THREADS);
    c.clone_fd = true;
    c
}

pub fn mount(a: MountArgs) -> CliResult {
    for o in a.fuse_options() {
        check_option(o)?;
    }
    let kms_options = a.kms_options()?;
    let attr_timeout = a.attr_timeout()?;
    let backing = canonical(&a.backing, "backing directory")?;
    clear_dead_mount(&a.mountpoint, &backing)?;
    let mnt = canonical(&a.mountpoint, "mountpoint")?;
    if !mnt.is_dir() {
        return Err(Failure::op(format!(
            "mountpoint {} is not a directory",
            mnt.display()
        )));
    }
    if mnt.starts_with(&backing) || backing.starts_with(&mnt) {
        return Err(Failure::op(
            "the mountpoint and the backing directory must not contain each other",
        ));
    }
    if mountinfo::is_mountpoint(&mnt) {
        return Err(Failure::op(format!("{} is already a mount point", mnt.display())));
    }
    let nonempty = a.fuse_options().any(|o| o == "nonempty");
    let empty = std::fs::read_dir(&mnt)
        .map(|mut d| d.next().is_none())
        .unwrap_or(false);
    if !empty && !nonempty {
        return Err(Failure::op(format!("mountpoint {} is not empty", mnt.display())));
    }
    read_body(&backing)?;
    let shared = a.shared_storage() || shared::recorded(&backing);
    match control::probe(&backing) {
        Probe::Nobody => {}
        // shared storage: another daemon of it here is fine (the lock below tells)
        Probe::Daemon(_) if shared => {}
        Probe::Daemon(m) => {
            return Err(Failure::op(format!(
                "{} is already mounted at {}",
                backing.display(),
                m.mountpoint.display()
            )))
        }
        Probe::Impostor(p) => {
            return Err(Failure::op(format!(
                "cannot mount {}: its control socket is taken by process {} (uid {}), which is not an \
                 ezfs daemon; stop that process and mount again",
                backing.display(),
                p.pid,
                p.uid
            )))
        }
    }
    // held by the daemon for its whole life: closing it would release the lock
    let mount_lock = shared::lock_mount(&backing, shared)?;
    if a.shared_storage() && !shared::recorded(&backing) {
        shared::record(&backing)?;
    } else if shared && !a.shared_storage() {
        log::info!(
            "{} is recorded as shared storage: mounting it as such",
            backing.display()
        );
    }
    if shared {
        // a record a killed daemon of its own left would make clients distrust every
        // shared daemon's socket; none can be running now (the lock says so)
        control::forget_any_daemon(&backing);
        shared::warn_about(&backing);
    }
    warn_if_open(&backing);
    let pw =
        passphrase::obtain(a.pass.passphrase_file.as_deref(), "passphrase", false).map_err(Failure::op)?;
    let keystore = Keystore::unlock(&backing, &pw)?;
    drop(pw);
    let keys = Arc::new(LocalProvider::with_kms_options(keystore, kms_options));
    if keys.store().read().body().provider.is_some() {
        // a bad provider setting (a KMS's certificate files) fails the mount, not
        // every open; nothing connects yet (that happens after the fork)
        keys.external()?;
    }
    let read_only = a.read_only || a.fuse_options().any(|o| o == "ro");
    // before the inode table sizes its descriptor budget from the limit
    raise_fd_limit();
    let mut core = Core::new(backing.clone(), keys, read_only).map_err(Failure::op)?;
    core.atime = crate::fs::AtimePolicy::from_options(a.fuse_options());
    core.kernel_checks = a.others_get_in();
    if a.passthrough() && !read_only {
        core.passthrough = true;
        core.writeback = false;
    }
    if shared {
        // the kernel would own file sizes while pages are dirty, and keep them from
        // other hosts' writes
        core.shared = true;
        core.writeback = false;
        core.ttl = Duration::ZERO;
        core.jobs = crate::fs::jobs::Jobs::shared(&crate::keys::keystore::ezfs_dir(&backing));
        core.refetch = shared::client_caches_pages(&backing);
    }
    if let Some(t) = attr_timeout {
        core.ttl = t;
    }
    let core = Arc::new(core);
    let located = core.locate_zones().map_err(Failure::op)?;
    for w in &located.warnings {
        log::warn!("{w}");
    }
    if !located.missing.is_empty() {
        return Err(Failure::op(format!(
            "refusing to mount {} so that no zone is silently lost:\n  {}",
            backing.display(),
            located.missing.join("\n  ")
        )));
    }
    let config = mount_config(&a, &backing);
    // the daemon (after the fork too) keeps the lock's description open until it exits
    std::mem::forget(mount_lock);
    if a.foreground {
        return serve(core, &mnt, &config, None);
    }
    daemonize(&backing, &mnt, |notify| serve(core, &mnt, &config, Some(notify)))
}

/// A backing root that other users can enter lets them read ciphertext, and write to
/// the parts they own behind the mount's back: say so (`ezfs init` makes it 0700).
fn warn_if_open(backing: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(backing) {
        let mode = m.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            log::warn!(
                "{} is accessible to other users (mode {mode:03o}): they can read its ciphertext \
                 and change what they own behind the mount; 'chmod 700 {}' (mounts with \
                 --allow-other still serve them)",
                backing.display(),
                backing.display()
            );
        }
    }
}

/// Forks; the child runs `child` with the write end of a pipe on which it reports
/// "OK" or an error; the parent waits for that report.
fn daemonize(backing: &Path, mnt: &Path, child: impl FnOnce(OwnedFd) -> CliResult) -> CliResult {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Failure::op(std::io::Error::last_os_error()));
    }
    // SAFETY: pipe2 returned two fresh descriptors that we now own.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: no other threads exist yet in this process, so fork is safe.
    match unsafe { libc::fork() } {
        -1 => Err(Failure::op(std::io::Error::last_os_error())),
        0 => {
            drop(rd);
            detach(backing);
            // a failure before the mount was usable went to the parent through the
            // pipe; one after it is logged by serve()
            let code = match child(wr) {
                Ok(()) => 0,
                Err(f) => f.code,
            };
            std::process::exit(code);
        }
        _ => {
            drop(wr);
            let mut report = String::new();
            let _ = std::fs::File::from(rd).read_to_string(&mut report);
            match report.strip_prefix("OK") {
                Some(_) => {
                    println!("mounted {} at {}", backing.display(), mnt.display());
                    Ok(())
                }
                None if report.is_empty() => Err(Failure::op("the mount daemon exited before mounting")),
                None => Err(Failure::op(report.trim_start_matches("ERR ").trim())),
            }
        }
    }
}

/// Daemon side of the fork: new session, working directory `/` (it must keep no
/// filesystem busy), standard input and output to /dev/null, and the log on standard
/// error only if that is a file (`ezfs mount ... 2>log`) or /dev/null: a terminal, a
/// pipe or a socket belongs to the caller, who must not wait on the daemon (`ezfs
/// mount ... | cat`, a captured subprocess), so the log goes to BACKING/.ezfs/ezfs.log.
fn detach(backing: &Path) {
    use std::os::fd::AsRawFd;
    let dir = match std::env::var_os(super::TEST_CORE_DIR) {
        Some(d) => {
            let unlimited = libc::rlimit {
                rlim_cur: libc::RLIM_INFINITY,
                rlim_max: libc::RLIM_INFINITY,
            };
            // SAFETY: valid pointer to a rlimit.
            unsafe { libc::setrlimit(libc::RLIMIT_CORE, &unlimited) };
            PathBuf::from(d)
        }
        None => PathBuf::from("/"),
    };
    let _ = std::env::set_current_dir(dir);
    // SAFETY: plain syscalls on our own descriptors.
    unsafe {
        libc::setsid();
        if let Ok(null) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
        {
            libc::dup2(null.as_raw_fd(), 0);
            libc::dup2(null.as_raw_fd(), 1);
        }
        let mut st: libc::stat = std::mem::zeroed();
        let keep = libc::fstat(2, &mut st) == 0 && matches!(st.st_mode & libc::S_IFMT, libc::S_IFREG)
            || (st.st_mode & libc::S_IFMT == libc::S_IFCHR && libc::isatty(2) == 0);
        if !keep {
            let log = crate::keys::keystore::ezfs_dir(backing).join("ezfs.log");
            let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND | libc::O_NOFOLLOW;
            match crate::backdir::sys::open_at(crate::backdir::sys::at_cwd(), log.as_os_str(), flags, 0o600) {
                Ok(f) => {
                    libc::dup2(f.as_raw_fd(), 2);
                }
                Err(_) => {
                    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
                        libc::dup2(null.as_raw_fd(), 2);
                    }
                }
            }
        }
    }
}

fn report(notify: &mut Option<OwnedFd>, msg: &str) {
    if let Some(fd) = notify.take() {
        let _ = std::fs::File::from(fd).write_all(msg.as_bytes());
    }
}

/// Mounts and serves until unmounted.
/// Starts filling the EDEK pools of the zones whose key is in a KMS (in the daemon:
/// threads do not survive the fork).
fn warm_kms_pools(core: &Core) {
    let registry = crate::keys::service::registry(&*core.keys);
    let keys: std::collections::BTreeSet<&str> = registry.values().map(|z| z.key.as_str()).collect();
    for key in keys {
        core.warm_kms_pool(key);
    }
}

fn serve(core: Arc<Core>, mnt: &Path, config: &Config, mut notify: Option<OwnedFd>) -> CliResult {
    let daemonized = notify.is_some();
    // bound by the daemon itself (after the fork): clients check that the socket's
    // owner is the process recorded in .ezfs
    let server = match Server::bind(core.clone(), mnt.to_path_buf()) {
        Ok(s) => s,
        Err(msg) => {
            report(&mut notify, &format!("ERR {msg}"));
            return Err(Failure::op(msg));
        }
    };
    let mut session = match fuser::Session::new(EzFs::new(core.clone()), mnt, config) {
        Ok(s) => s,
        Err(e) => {
            let msg = format!("cannot mount {}: {e}", mnt.display());
            report(&mut notify, &format!("ERR {msg}"));
            return Err(Failure::op(msg));
        }
    };
    raise_readahead(mnt);
    warm_kms_pools(&core);
    let _ = core.invalidate.set(Box::new(session.notifier()));
    let mut unmounter = session.unmount_callable();
    std::thread::Builder::new()
        .name("ezfs-control".into())
        .spawn(move || server.run())
        .map_err(Failure::op)?;
    let mnt_owned = mnt.to_path_buf();
    let mut signals = signal_hook::iterator::Signals::new([libc::SIGINT, libc::SIGTERM, libc::SIGHUP])
        .map_err(Failure::op)?;
    std::thread::Builder::new()
        .name("ezfs-signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                log::info!("signal {sig}: unmounting {}", mnt_owned.display());
                if let Err(e) = unmounter.unmount() {
                    log::warn!("unmount failed ({e}); detaching lazily");
                    lazy_unmount(&mnt_owned);
                }
            }
        })
        .map_err(Failure::op)?;
    // several daemons of shared storage (of several hosts) would overwrite each
    // other's record: clients then trust root's sockets (see control::trusted)
    if core.shared {
        shared::watch_keystore(core.clone()).map_err(Failure::op)?;
    } else if let Err(e) = control::record_daemon(&core.backing, mnt) {
        log::warn!("cannot record the daemon in {}: {e}", core.backing.display());
    }
    report(&mut notify, "OK\n");
    log::info!("mounted {} at {}", core.backing.display(), mnt.display());
    let res = session.run();
    core.stop_jobs();
    control::forget_daemon(&core.backing);
    log::info!("unmounted {}", mnt.display());
    res.map_err(|e| {
        let msg = format!("session ended with an error: {e}");
        if daemonized {
            log::error!("{msg}");
        }
        Failure::op(msg)
    })
}

/// The daemon holds a descriptor per inode the kernel has cached (closing idle ones
/// beyond half the limit, see fs::inode): raise the open file limit as far as allowed
/// (for root with CAP_SYS_RESOURCE: the system's `nr_open`).
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<libc::rlim_t>().ok())
        .unwrap_or(lim.rlim_max);
    let want = libc::rlimit {
        rlim_cur: nr_open.max(lim.rlim_max),
        rlim_max: nr_open.max(lim.rlim_max),
    };
    // SAFETY: valid pointers; raising the hard limit needs CAP_SYS_RESOURCE, else fall
    // back to the hard limit we have
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } != 0 {
        let soft = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &soft) };
    }
}

/// Lets the kernel read ahead 1 MiB at a time (its default, 128 KiB, would split every
/// large sequential read into small requests). Needs root; harmless to skip.
fn raise_readahead(mnt: &Path) {
    if let Some(dev) = mountinfo::device_of(mnt) {
        let _ = std::fs::write(format!("/sys/class/bdi/{dev}/read_ahead_kb"), "1024");
    }
}

fn lazy_unmount(mnt: &Path) {
    if let Ok(c) = std::ffi::CString::new(mnt.as_os_str().as_encoded_bytes()) {
        // SAFETY: valid C string.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Whether process `pid` still runs (a zombie waiting for its reaper does not).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']).not())
        })
        .unwrap_or(false)
}

/// How long `ezfs umount` retries a busy mount before saying so.
const UMOUNT_BUSY_WAIT: Duration = Duration::from_secs(2);

pub fn umount(mnt: &Path) -> CliResult {
    let abs = mnt
        .canonicalize()
        .or_else(|_| std::path::absolute(mnt))
        .map_err(Failure::op)?;
    let m = mountinfo::ezfs_mounts()
        .into_iter()
        .find(|m| m.mountpoint == abs)
        .ok_or_else(|| Failure::op(format!("{} is not an ezfs mount", mnt.display())))?;
    let pid = control::call_mount(&m.backing, &m.mountpoint, &Request::Ping)
        .ok()
        .and_then(|v| serde_json::from_value::<MountInfo>(v).ok())
        .map(|i| i.pid);
    let c = std::ffi::CString::new(abs.as_os_str().as_encoded_bytes()).map_err(Failure::op)?;
    // A file closed a moment ago can still hold the mount: a process forked by another
    // thread keeps a copy of the descriptor until it execs. Such a hold is gone within
    // moments, a real one (an open file, a working directory) is not: retry briefly.
    let deadline = Instant::now() + UMOUNT_BUSY_WAIT;
    let umounted = loop {
        // SAFETY: valid C string.
        if unsafe { libc::umount2(c.as_ptr(), 0) } == 0 {
            break Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EBUSY) || Instant::now() >= deadline {
            break Err(e);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if let Err(e) = umounted {
        match e.raw_os_error() {
            Some(libc::EBUSY) => {
                return Err(Failure::op(format!(
                    "{} is busy (files open or a process inside it)",
                    abs.display()
                )))
            }
            Some(libc::EPERM) => {
                let ok = std::process::Command::new("fusermount3")
                    .arg("-u")
                    .arg(&abs)
                    .status()
                    .is_ok_and(|s| s.success());
                if !ok {
                    return Err(Failure::op(format!("cannot unmount {}: {e}", abs.display())));
                }
            }
            _ => return Err(Failure::op(format!("cannot unmount {}: {e}", abs.display()))),
        }
    }
    // wait for the daemon to finish (it flushes and exits once the kernel lets go)
    if let Some(pid) = pid {
        let deadline = Instant::now() + Duration::from_secs(20);
        while running(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    println!("unmounted {}", abs.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        mount: MountArgs,
    }

    fn kernel_checks(args: &[&str]) -> bool {
        let cli = Cli::try_parse_from(["ezfs", "b", "m"].iter().chain(args)).expect("parses");
        mount_config(&cli.mount, Path::new("/b"))
            .mount_options
            .iter()
            .any(|o| matches!(o, MountOption::DefaultPermissions))
    }

    /// Other users' requests run with the daemon's rights: whenever they can get in,
    /// the kernel checks their permissions first.
    #[test]
    fn kernel_checks_permissions_whenever_others_get_in() {
        assert!(!kernel_checks(&[]));
        assert!(!kernel_checks(&["-o", "noatime"]));
        assert!(kernel_checks(&["--allow-other"]));
        assert!(kernel_checks(&["-o", "noatime,allow_other"]));
        assert!(kernel_checks(&["-o", "allow_root"]));
    }
}
