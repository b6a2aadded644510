//! The control socket: how `ezfs zone …` and key commands talk to a running mount.
//!
//! One abstract Unix socket per mount, named after the backing directory's device and
//! inode, so any user who can reach the mount can find it without a writable path.
//! Requests and responses are one JSON line each. The daemon learns the caller's uid
//! from the socket (SO_PEERCRED) and checks it where an operation needs it.

use crate::fs::Core;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A request to the mount daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Who are you: pid, mountpoint, backing dir.
    Ping,
    /// Re-read the keystore (the command line changed it).
    Reload,
    ZoneCreate {
        path: String,
        key: String,
    },
    ZoneInfo {
        path: String,
    },
    ZoneList,
    /// Start re-encrypting the zone rooted at `path`.
    ReencryptStart {
        path: String,
        data: bool,
    },
    /// Re-encryption status of every zone, or of the zone rooted at `path`.
    ReencryptStatus {
        path: Option<String>,
    },
    /// The record of the last job on the zone with this id (hex), wherever its root
    /// is now: what `zone reencrypt` polls, since the root may be renamed meanwhile.
    ReencryptJob {
        zone_id: String,
    },
}

/// The daemon's answer: `Ok(data)` or one error sentence.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub result: Result<serde_json::Value, String>,
}

/// What `Ping` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MountInfo {
    pub pid: u32,
    pub mountpoint: PathBuf,
    pub backing: PathBuf,
}

fn socket_addr(backing: &Path) -> std::io::Result<SocketAddr> {
    let m = std::fs::metadata(backing)?;
    SocketAddr::from_abstract_name(format!("ezfs/{}/{}", m.dev(), m.ino()))
}

/// Uid of the process at the other end of `s`.
fn peer_uid(s: &UnixStream) -> Option<u32> {
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
    (r == 0).then_some(cred.uid)
}

/// Listens for requests on behalf of the mounted filesystem `core`.
pub struct Server {
    listener: UnixListener,
    core: Arc<Core>,
    mountpoint: PathBuf,
}

impl Server {
    /// Binds the socket; fails if another daemon serves the same backing dir.
    pub fn bind(core: Arc<Core>, mountpoint: PathBuf) -> std::io::Result<Server> {
        let listener = UnixListener::bind_addr(&socket_addr(&core.backing)?).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                std::io::Error::new(e.kind(), format!("{} is already mounted", core.backing.display()))
            } else {
                e
            }
        })?;
        Ok(Server {
            listener,
            core,
            mountpoint,
        })
    }

    /// Serves requests until the process exits.
    pub fn run(self) {
        for stream in self.listener.incoming().flatten() {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            if let Err(e) = self.serve_one(&stream) {
                log::debug!("control connection: {e}");
            }
        }
    }

    fn serve_one(&self, stream: &UnixStream) -> std::io::Result<()> {
        let uid = peer_uid(stream).unwrap_or(u32::MAX);
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line)?;
        let result = match serde_json::from_str::<Request>(&line) {
            Ok(req) => self.handle(req, uid),
            Err(e) => Err(format!("bad request: {e}")),
        };
        let mut out = serde_json::to_vec(&Response { result }).expect("response serializes");
        out.push(b'\n');
        (&*stream).write_all(&out)
    }

    fn handle(&self, req: Request, uid: u32) -> Result<serde_json::Value, String> {
        let c = &self.core;
        match req {
            Request::Ping => Ok(json(&MountInfo {
                pid: std::process::id(),
                mountpoint: self.mountpoint.clone(),
                backing: c.backing.clone(),
            })),
            Request::Reload => c
                .keys
                .reload()
                .map(|_| serde_json::Value::Null)
                .map_err(|e| e.to_string()),
            Request::ZoneCreate { path, key } => c.zone_create(&path, &key, uid).map(|z| json(&z)),
            Request::ZoneInfo { path } => c.zone_info(&path).map(|z| json(&z)),
            Request::ZoneList => Ok(json(&c.zone_list())),
            Request::ReencryptStart { path, data } => c.reencrypt_start(&path, data, uid).map(|j| json(&j)),
            Request::ReencryptStatus { path } => c.reencrypt_status(path.as_deref()).map(|j| json(&j)),
            Request::ReencryptJob { zone_id } => c
                .jobs
                .get(&zone_id)
                .map(|j| json(&j))
                .ok_or_else(|| format!("no re-encryption job of zone {zone_id} is on record")),
        }
    }
}

fn json<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).expect("serializes")
}

/// Why a request could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0} is not mounted")]
    NotMounted(PathBuf),
    #[error("{0}")]
    Failed(String),
    #[error("talking to the mount daemon: {0}")]
    Io(#[from] std::io::Error),
}

/// Sends `req` to the daemon serving `backing` and returns its answer.
pub fn call(backing: &Path, req: &Request) -> Result<serde_json::Value, ClientError> {
    let addr = socket_addr(backing)?;
    let stream =
        UnixStream::connect_addr(&addr).map_err(|_| ClientError::NotMounted(backing.to_path_buf()))?;
    stream.set_read_timeout(Some(Duration::from_secs(600)))?;
    let mut line = serde_json::to_vec(req).expect("request serializes");
    line.push(b'\n');
    (&stream).write_all(&line)?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer)?;
    let resp: Response = serde_json::from_str(&answer)
        .map_err(|e| ClientError::Failed(format!("bad answer from the daemon: {e}")))?;
    resp.result.map_err(ClientError::Failed)
}
