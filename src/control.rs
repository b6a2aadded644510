//! The control socket: how `ezfs zone …` and key commands talk to a running mount.
//!
//! One abstract Unix socket per mount, named after the backing directory's device and
//! inode, so any user who can reach the mount can find it without a writable path.
//! Requests and responses are one JSON line each.
//!
//! Anyone can connect, and anyone could bind the name first, so both ends check the
//! other (`SO_PEERCRED`):
//! - the daemon answers each request for the caller the kernel names: paths are
//!   resolved with the caller's rights, `reload` and `key_list` are for root and the
//!   keystore's owner only; requests are bounded (64 KiB) and served by several
//!   threads with read and write timeouts, so no client can hold the others up;
//! - a client talks only to a daemon it can trust: root, itself, or the very process
//!   that recorded itself in `BACKING/.ezfs/daemon.json` when it mounted.

use crate::backdir::{sys, Caller};
use crate::fs::jobs::{JobState, JobStatus};
use crate::fs::zonereq::ZoneSummary;
use crate::fs::{Core, FsError, FsResult};
use serde::{Deserialize, Serialize};
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Longest request line the daemon reads.
pub const MAX_REQUEST: u64 = 64 * 1024;
/// Connections served at once; more are told to retry.
const MAX_CLIENTS: usize = 16;
/// How long the daemon waits for a client to send its request or take its answer.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest error sentence sent back (a request can name a long path).
const MAX_ERROR: usize = 2000;
/// The daemon's record of itself in `.ezfs`, for clients that can read it.
pub const DAEMON_FILE: &str = "daemon.json";

/// A request to the mount daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Who are you: pid, mountpoint, backing dir.
    Ping,
    /// Re-read the keystore (the command line changed it) and find the zones again.
    Reload,
    /// Make the empty directory `path` a zone under key `key`.
    ZoneCreate {
        /// The directory, relative to the mount root.
        path: String,
        /// The name of the zone's key.
        key: String,
        /// Encrypt the file names in the zone too (absent in older clients: plain).
        #[serde(default)]
        encrypt_names: bool,
    },
    /// Encryption details of the file or directory `path` in a zone.
    ZoneInfo {
        /// The file or directory, relative to the mount root.
        path: String,
    },
    /// The zones the caller can reach.
    ZoneList,
    /// Start re-encrypting the zone rooted at `path`.
    ReencryptStart {
        /// The zone root, relative to the mount root.
        path: String,
        /// Also give every file a new data key and re-encrypt its blocks (`--data`).
        data: bool,
    },
    /// Stop the running job of the zone rooted at `path` (resumable).
    ReencryptCancel {
        /// The zone root, relative to the mount root.
        path: String,
    },
    /// Re-encryption status of every zone, or of the zone rooted at `path`.
    ReencryptStatus {
        /// The zone root, relative to the mount root; none for every zone.
        path: Option<String>,
    },
    /// The record of the last job on the zone with this id (hex), wherever its root
    /// is now: what `zone reencrypt` polls, since the root may be renamed meanwhile.
    ReencryptJob {
        /// The zone's id, in hex.
        zone_id: String,
    },
    /// The keystore's public part as the daemon authenticated it.
    KeyList,
    /// What `ezfs status` shows of this mount.
    Status,
    /// The files of the zone rooted at `path` and their key versions.
    ZoneFiles {
        /// The zone root, relative to the mount root.
        path: String,
        /// Only the files whose data key is wrapped with this key version.
        version: Option<u32>,
    },
}

/// The daemon's answer: `Ok(data)` or one error sentence.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    /// The answer's data, or why the request failed, in one sentence.
    pub result: Result<serde_json::Value, String>,
}

/// What `Status` answers: the mount, its zones and jobs (those the caller can reach),
/// and its counters since mount.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DaemonStatus {
    /// The daemon's process id.
    pub pid: u32,
    /// Where the filesystem is mounted.
    pub mountpoint: PathBuf,
    /// The backing directory.
    pub backing: PathBuf,
    /// Unix seconds.
    pub started: u64,
    /// Seconds since mount.
    pub uptime_s: u64,
    /// Whether the mount is read-only.
    pub read_only: bool,
    /// Open file and directory handles.
    pub open_handles: usize,
    /// The zones the caller can reach.
    pub zones: Vec<ZoneSummary>,
    /// The keys of those zones.
    pub keys_in_use: Vec<String>,
    /// Running, interrupted and cancelled re-encryption jobs.
    pub jobs: Vec<JobStatus>,
    /// Operation counters since mount.
    pub counters: crate::fs::stats::Counters,
    /// The KMS client side, when zone keys are in a KMS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms: Option<crate::keys::kms::KmsStatus>,
}

/// What `Ping` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MountInfo {
    /// The daemon's process id.
    pub pid: u32,
    /// Where the filesystem is mounted.
    pub mountpoint: PathBuf,
    /// The backing directory.
    pub backing: PathBuf,
}

fn socket_addr(backing: &Path) -> std::io::Result<SocketAddr> {
    let m = std::fs::metadata(backing)?;
    SocketAddr::from_abstract_name(format!("ezfs/{}/{}", m.dev(), m.ino()))
}

/// The socket name of the shared-storage daemon of `backing` mounted at `mountpoint`:
/// several of them may serve one backing dir on one host. (Each also takes the
/// backing dir's name if it is free, for the commands that name only the backing dir.)
fn mount_socket_addr(backing: &Path, mountpoint: &Path) -> std::io::Result<SocketAddr> {
    let m = std::fs::metadata(backing)?;
    use sha2::Digest;
    let digest = sha2::Sha256::digest(mountpoint.as_os_str().as_encoded_bytes());
    SocketAddr::from_abstract_name(format!(
        "ezfs/{}/{}/{}",
        m.dev(),
        m.ino(),
        crate::text::hex(&digest[..16])
    ))
}

/// The process at the other end of `s`, as the kernel saw it connect or bind.
fn peer(s: &UnixStream) -> Option<Caller> {
    // SAFETY: ucred is plain integers, for which zero is a value.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred and len are valid out pointers of the right size.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (r == 0).then(|| Caller::new(cred.uid, cred.gid, cred.pid as u32))
}

/// Listens for requests on behalf of the mounted filesystem `core`.
pub struct Server {
    listener: UnixListener,
    /// A shared-storage daemon's second name: the backing dir's, if it was free.
    by_backing: Option<UnixListener>,
    core: Arc<Core>,
    mountpoint: PathBuf,
}

impl Server {
    /// Binds the socket; fails if another process holds the name (another daemon of
    /// the same backing dir, or a squatter: the message tells which).
    pub fn bind(core: Arc<Core>, mountpoint: PathBuf) -> Result<Server, BindError> {
        if core.shared {
            let own = UnixListener::bind_addr(&mount_socket_addr(&core.backing, &mountpoint)?)?;
            let by_backing = UnixListener::bind_addr(&socket_addr(&core.backing)?).ok();
            return Ok(Server {
                listener: own,
                by_backing,
                core,
                mountpoint,
            });
        }
        let addr = socket_addr(&core.backing)?;
        let listener = UnixListener::bind_addr(&addr).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                let backing = core.backing.clone();
                match probe(&core.backing) {
                    Probe::Daemon(m) => BindError::MountedAt(backing, m.mountpoint),
                    Probe::Impostor(p) => BindError::Impostor(backing, p),
                    Probe::Nobody => BindError::Mounted(backing),
                }
            } else {
                BindError::Io(e)
            }
        })?;
        Ok(Server {
            listener,
            by_backing: None,
            core,
            mountpoint,
        })
    }

    /// Serves requests until the process exits: each connection in a thread of its
    /// own, at most `MAX_CLIENTS` at once.
    pub fn run(mut self) {
        let second = self.by_backing.take();
        let me = Arc::new(self);
        let active = Arc::new(AtomicUsize::new(0));
        if let Some(l) = second {
            let (me, active) = (me.clone(), active.clone());
            let _ = std::thread::Builder::new()
                .name("ezfs-control".into())
                .spawn(move || me.accept(&l, &active));
        }
        me.accept(&me.listener, &active);
    }

    fn accept(self: &Arc<Self>, listener: &UnixListener, active: &Arc<AtomicUsize>) {
        let me = self;
        for stream in listener.incoming().flatten() {
            let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
            let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
            if active.fetch_add(1, Ordering::AcqRel) >= MAX_CLIENTS {
                active.fetch_sub(1, Ordering::AcqRel);
                let _ = reply(&stream, Err(RequestError::Busy));
                continue;
            }
            let (me, done) = (me.clone(), active.clone());
            let spawned = std::thread::Builder::new()
                .name("ezfs-control-client".into())
                .spawn(move || {
                    if let Err(e) = me.serve_one(&stream) {
                        log::debug!("control connection: {e}");
                    }
                    done.fetch_sub(1, Ordering::AcqRel);
                });
            if spawned.is_err() {
                active.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    fn serve_one(&self, stream: &UnixStream) -> std::io::Result<()> {
        let Some(caller) = peer(stream) else {
            return Ok(());
        };
        let mut line = Vec::new();
        BufReader::new(stream.take(MAX_REQUEST + 1)).read_until(b'\n', &mut line)?;
        let result = if line.len() as u64 > MAX_REQUEST {
            Err(RequestError::TooLong)
        } else {
            match serde_json::from_slice::<Request>(&line) {
                Ok(req) => self.handle(req, &caller).map_err(RequestError::from),
                Err(e) => Err(RequestError::Bad(e)),
            }
        };
        reply(stream, result)
    }

    /// Whether `caller` may change what the daemon knows of the keystore: root, or the
    /// keystore file's owner.
    fn keystore_admin(&self, caller: &Caller) -> FsResult<()> {
        if caller.is_root() {
            return Ok(());
        }
        let owner = sys::open_at(
            sys::at_cwd(),
            crate::keys::keystore::ezfs_dir(&self.core.backing).as_os_str(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )
        .and_then(|d| sys::stat_at(d.as_fd(), OsStr::new(crate::keys::keystore::KEYSTORE_FILE)))
        .map(|st| st.st_uid);
        if owner.is_ok_and(|o| o == caller.uid) {
            Ok(())
        } else {
            Err(FsError::NotAdmin)
        }
    }

    fn handle(&self, req: Request, caller: &Caller) -> FsResult<serde_json::Value> {
        let c = &self.core;
        match req {
            Request::Ping => Ok(json(&MountInfo {
                pid: std::process::id(),
                mountpoint: self.mountpoint.clone(),
                backing: c.backing.clone(),
            })),
            Request::Reload => {
                self.keystore_admin(caller)?;
                c.reload().map(|_| serde_json::Value::Null)
            }
            Request::Status => {
                let zones = c.zones_visible(caller, false);
                let mut keys: Vec<String> = zones.iter().map(|z| z.key.clone()).collect();
                keys.sort();
                keys.dedup();
                let jobs = c
                    .reencrypt_status(None, caller)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|j| j.state == JobState::Running || j.state.resumable())
                    .collect();
                let since = |t: std::time::SystemTime| {
                    t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
                };
                Ok(json(&DaemonStatus {
                    pid: std::process::id(),
                    mountpoint: self.mountpoint.clone(),
                    backing: c.backing.clone(),
                    started: since(c.started),
                    uptime_s: c.started.elapsed().map_or(0, |d| d.as_secs()),
                    read_only: c.read_only,
                    open_handles: c.open_handles(),
                    zones,
                    keys_in_use: keys,
                    jobs,
                    counters: crate::fs::stats::snapshot(),
                    kms: c.keys.kms_status(),
                }))
            }
            Request::KeyList => {
                self.keystore_admin(caller)?;
                Ok(json(&c.keys.listing()))
            }
            Request::ZoneCreate {
                path,
                key,
                encrypt_names,
            } => c
                .zone_create(&path, &key, encrypt_names, caller)
                .map(|z| json(&z)),
            Request::ZoneInfo { path } => c.zone_info(&path, caller).map(|z| json(&z)),
            Request::ZoneList => Ok(json(&c.zone_list(caller))),
            Request::ZoneFiles { path, version } => {
                c.zone_file_list(&path, version, caller).map(|f| json(&f))
            }
            Request::ReencryptStart { path, data } => {
                c.reencrypt_start(&path, data, caller).map(|j| json(&j))
            }
            Request::ReencryptCancel { path } => c.reencrypt_cancel(&path, caller).map(|j| json(&j)),
            Request::ReencryptStatus { path } => {
                c.reencrypt_status(path.as_deref(), caller).map(|j| json(&j))
            }
            Request::ReencryptJob { zone_id } => c.reencrypt_job(&zone_id, caller).map(|j| json(&j)),
        }
    }
}

/// Why a request failed, as the daemon answers it.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The filesystem refused or failed the request.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// The request line is longer than `MAX_REQUEST` bytes.
    #[error("request longer than {MAX_REQUEST} bytes")]
    TooLong,
    /// The request line is not a request in JSON.
    #[error("bad request: {0}")]
    Bad(serde_json::Error),
    /// `MAX_CLIENTS` connections are being served already.
    #[error("the mount daemon is busy; try again")]
    Busy,
}

/// Why the control socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The backing dir's daemon already serves it, at the mountpoint given.
    #[error("{} is already mounted at {}", .0.display(), .1.display())]
    MountedAt(PathBuf, PathBuf),
    /// Another process holds the socket name but does not answer as a daemon.
    #[error("{} is already mounted", .0.display())]
    Mounted(PathBuf),
    /// A process that is not the backing dir's daemon holds the socket name.
    #[error("{}", impostor(.0, .1))]
    Impostor(PathBuf, Caller),
    /// Creating or binding the socket failed.
    #[error("the control socket: {}", crate::text::io_words(.0))]
    Io(#[from] std::io::Error),
}

/// Sends one answer line. On the wire an error is its sentence, cut to `MAX_ERROR`
/// bytes: the command line shows it as it is.
fn reply(stream: &UnixStream, result: Result<serde_json::Value, RequestError>) -> std::io::Result<()> {
    let result = result.map_err(|e| crate::text::shorten(&e.to_string(), MAX_ERROR));
    let mut out = serde_json::to_vec(&Response { result }).expect("response serializes");
    out.push(b'\n');
    (&*stream).write_all(&out)
}

fn json<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).expect("serializes")
}

/// Why a request could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No daemon listens on the backing dir's socket, or it went away before answering.
    #[error("{0} is not mounted")]
    NotMounted(PathBuf),
    /// The process holding the socket is not the backing dir's daemon; it is not talked to.
    #[error("{}", impostor(.0, .1))]
    Impostor(PathBuf, Caller),
    /// The daemon answered with an error: its sentence.
    #[error("{0}")]
    Failed(String),
    /// Sending the request or reading the answer failed.
    #[error("talking to the mount daemon: {0}")]
    Io(#[from] std::io::Error),
}

fn impostor(backing: &Path, p: &Caller) -> String {
    format!(
        "the control socket of {} is held by process {} (uid {}), which is not its ezfs daemon; \
         it was ignored (stop that process)",
        backing.display(),
        p.pid,
        p.uid
    )
}

/// The daemon's record of itself, if this process may read it (root and the backing
/// dir's owner may).
fn recorded_daemon(backing: &Path) -> Option<(u32, u32)> {
    let dir = sys::open_at(
        sys::at_cwd(),
        crate::keys::keystore::ezfs_dir(backing).as_os_str(),
        libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    )
    .ok()?;
    let bytes = crate::backdir::resolve::read_small(dir.as_fd(), OsStr::new(DAEMON_FILE), 4096).ok()?;
    let st = sys::stat_at(dir.as_fd(), OsStr::new(DAEMON_FILE)).ok()?;
    let info: MountInfo = serde_json::from_slice(&bytes).ok()?;
    Some((info.pid, st.st_uid))
}

/// Whether the server at the other end of `s` is the daemon of `backing`: the process
/// that recorded itself in `.ezfs` when that record is readable here, else a process of
/// root or of this user.
fn trusted(s: &UnixStream, backing: &Path) -> Result<(), Caller> {
    let Some(p) = peer(s) else {
        return Err(Caller::new(u32::MAX, u32::MAX, 0));
    };
    let ok = match recorded_daemon(backing) {
        Some((pid, uid)) => p.pid == pid && p.uid == uid,
        // SAFETY: geteuid cannot fail.
        None => p.uid == 0 || p.uid == unsafe { libc::geteuid() },
    };
    if ok {
        Ok(())
    } else {
        Err(p)
    }
}

/// Records the daemon (this process) in `.ezfs`, so that clients can check they talk
/// to it; removed by [`forget_daemon`].
pub fn record_daemon(backing: &Path, mountpoint: &Path) -> std::io::Result<()> {
    let info = MountInfo {
        pid: std::process::id(),
        mountpoint: mountpoint.to_path_buf(),
        backing: backing.to_path_buf(),
    };
    let path = crate::keys::keystore::ezfs_dir(backing).join(DAEMON_FILE);
    crate::keys::atomic::write_file(&path, &serde_json::to_vec(&info).expect("serializes"), 0o644)
}

/// Removes the daemon's record (at unmount), if it is still this process's.
pub fn forget_daemon(backing: &Path) {
    if recorded_daemon(backing).is_some_and(|(pid, _)| pid == std::process::id()) {
        forget_any_daemon(backing);
    }
}

/// Removes whatever daemon record there is (shared storage keeps none).
pub fn forget_any_daemon(backing: &Path) {
    let dir = crate::keys::keystore::ezfs_dir(backing);
    if let Ok(d) = sys::open_at(
        sys::at_cwd(),
        dir.as_os_str(),
        libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    ) {
        let _ = sys::unlink_at(d.as_fd(), OsStr::new(DAEMON_FILE), 0);
    }
}

/// Who holds the control socket name of a backing dir.
pub enum Probe {
    /// No one answers on the socket name (or not as a daemon).
    Nobody,
    /// The backing dir's daemon, and what it says of itself.
    Daemon(MountInfo),
    /// A process that is not the backing dir's daemon, as the kernel names it.
    Impostor(Caller),
}

/// Finds out who holds the control socket of `backing`.
pub fn probe(backing: &Path) -> Probe {
    match call(backing, &Request::Ping) {
        Ok(v) => serde_json::from_value(v).map_or(Probe::Nobody, Probe::Daemon),
        Err(ClientError::Impostor(_, p)) => Probe::Impostor(p),
        Err(_) => Probe::Nobody,
    }
}

/// Sends `req` to the daemon of `backing` mounted at `mountpoint` (a shared-storage
/// daemon by its own name, any other by the backing dir's) and returns its answer.
pub fn call_mount(
    backing: &Path,
    mountpoint: &Path,
    req: &Request,
) -> Result<serde_json::Value, ClientError> {
    match call_addr(backing, &mount_socket_addr(backing, mountpoint)?, req) {
        Err(ClientError::NotMounted(_)) => call(backing, req),
        other => other,
    }
}

/// Sends `req` to the daemon serving `backing` and returns its answer.
pub fn call(backing: &Path, req: &Request) -> Result<serde_json::Value, ClientError> {
    call_addr(backing, &socket_addr(backing)?, req)
}

fn call_addr(backing: &Path, addr: &SocketAddr, req: &Request) -> Result<serde_json::Value, ClientError> {
    let stream =
        UnixStream::connect_addr(addr).map_err(|_| ClientError::NotMounted(backing.to_path_buf()))?;
    trusted(&stream, backing).map_err(|p| ClientError::Impostor(backing.to_path_buf(), p))?;
    stream.set_read_timeout(Some(Duration::from_secs(600)))?;
    stream.set_write_timeout(Some(Duration::from_secs(60)))?;
    let mut line = serde_json::to_vec(req).expect("request serializes");
    line.push(b'\n');
    (&stream).write_all(&line)?;
    let mut answer = String::new();
    let read = BufReader::new(&stream).read_line(&mut answer);
    // the daemon went away between connect and answer (killed, or exiting)
    if matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset) || matches!(read, Ok(0)) {
        return Err(ClientError::NotMounted(backing.to_path_buf()));
    }
    read?;
    let resp: Response = serde_json::from_str(&answer)
        .map_err(|e| ClientError::Failed(format!("bad answer from the daemon: {e}")))?;
    resp.result.map_err(ClientError::Failed)
}
