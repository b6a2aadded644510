//! Test harness for the KMIP client: a throwaway PKI made with the `openssl` CLI and
//! real PyKMIP servers (`/usr/bin/pykmip-server`, Debian's python3-pykmip) on free
//! loopback ports.
//!
//! [`KmipPki::new`] writes a CA, a server certificate (SAN IP:127.0.0.1 and
//! DNS:localhost, serverAuth) and a client certificate (CN `ezfs`, clientAuth), all
//! ECDSA P-256: PyKMIP's TLS 1.2 suites that rustls also speaks are ECDHE-ECDSA with
//! AES-GCM. [`KmipServer::start`] runs a server in its own process group on a given
//! SQLite database; `stop` (also on Drop) SIGKILLs the whole group and waits.
//!
//! A missing pykmip-server or openssl is a test failure with a clear message, never a
//! silent skip.

#![allow(dead_code)]

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The PyKMIP server script.
pub const PYKMIP_SERVER: &str = "/usr/bin/pykmip-server";
/// How long a server may take to listen on a loaded 2-core machine.
const START_DEADLINE: Duration = Duration::from_secs(90);

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (is openssl installed?)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A throwaway CA with a server and a client certificate, as PEM files in a directory.
pub struct KmipPki {
    /// The directory holding the files.
    pub dir: PathBuf,
    /// The CA certificate.
    pub ca: PathBuf,
    /// The server certificate and key.
    pub server_cert: PathBuf,
    /// The server's private key.
    pub server_key: PathBuf,
    /// The client certificate (CN `ezfs`).
    pub client_cert: PathBuf,
    /// The client's private key.
    pub client_key: PathBuf,
}

impl KmipPki {
    /// Makes the CA, server and client certificates in `dir` (created if missing).
    pub fn new(dir: &Path) -> KmipPki {
        fs::create_dir_all(dir).unwrap();
        let ca = dir.join("ca.pem");
        let ca_key = dir.join("ca.key");
        genkey(&ca_key);
        run(Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-new",
                "-sha256",
                "-days",
                "3",
                "-subj",
                "/CN=ezfs test CA",
                "-key",
            ])
            .arg(&ca_key)
            .arg("-out")
            .arg(&ca)
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]));
        let mut pki = KmipPki {
            dir: dir.to_owned(),
            ca,
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: PathBuf::new(),
            client_key: PathBuf::new(),
        };
        pki.issue(
            "server",
            "localhost",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        );
        let (cert, key) = pki.client("ezfs");
        pki.client_cert = cert;
        pki.client_key = key;
        pki
    }

    /// Issues another client certificate with common name `cn`; returns (cert, key).
    pub fn client(&self, cn: &str) -> (PathBuf, PathBuf) {
        let stem = format!("client-{cn}");
        self.issue(&stem, cn, "extendedKeyUsage=clientAuth\n");
        (
            self.dir.join(format!("{stem}.pem")),
            self.dir.join(format!("{stem}.key")),
        )
    }

    fn issue(&self, stem: &str, cn: &str, ext: &str) {
        let key = self.dir.join(format!("{stem}.key"));
        let csr = self.dir.join(format!("{stem}.csr"));
        let extfile = self.dir.join(format!("{stem}.ext"));
        genkey(&key);
        run(Command::new("openssl")
            .args(["req", "-new", "-sha256", "-subj", &format!("/CN={cn}"), "-key"])
            .arg(&key)
            .arg("-out")
            .arg(&csr));
        fs::write(
            &extfile,
            format!("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyAgreement\n{ext}"),
        )
        .unwrap();
        run(Command::new("openssl")
            .args(["x509", "-req", "-sha256", "-days", "3", "-in"])
            .arg(&csr)
            .arg("-CA")
            .arg(&self.ca)
            .arg("-CAkey")
            .arg(self.dir.join("ca.key"))
            .arg("-CAserial")
            .arg(self.dir.join("ca.srl"))
            .arg("-CAcreateserial")
            .arg("-extfile")
            .arg(&extfile)
            .arg("-out")
            .arg(self.dir.join(format!("{stem}.pem"))));
    }

    /// A `kmip://` URL for `servers` with the `ezfs` client certificate and `extra`
    /// parameters (e.g. `&timeout=2`).
    pub fn url(&self, servers: &[&KmipServer], extra: &str) -> String {
        self.url_with(servers, &self.client_cert, &self.client_key, extra)
    }

    /// A `kmip://` URL for `servers` with the given client certificate and key.
    pub fn url_with(&self, servers: &[&KmipServer], cert: &Path, key: &Path, extra: &str) -> String {
        let hosts: Vec<String> = servers.iter().map(|s| format!("127.0.0.1:{}", s.port)).collect();
        format!(
            "kmip://{}?ca={}&cert={}&key={}{extra}",
            hosts.join(","),
            self.ca.display(),
            cert.display(),
            key.display()
        )
    }
}

fn genkey(path: &Path) {
    run(Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(path));
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running pykmip-server on 127.0.0.1.
pub struct KmipServer {
    /// The port it listens on (kept across restarts).
    pub port: u16,
    /// Its directory: server.conf, log, policies.
    pub dir: PathBuf,
    /// Its log file.
    pub log: PathBuf,
    child: Option<Child>,
}

impl KmipServer {
    /// Starts a server with `pki`'s server certificate, storing keys in the SQLite file
    /// `db`, and waits until it accepts TCP connections. Panics with the log if it does
    /// not start.
    pub fn start(pki: &KmipPki, db: &Path) -> KmipServer {
        assert!(
            Path::new(PYKMIP_SERVER).exists(),
            "{PYKMIP_SERVER} is missing: install Debian's python3-pykmip (apt-get install python3-pykmip)"
        );
        let port = free_port();
        let dir = pki.dir.join(format!("server-{port}"));
        let policies = dir.join("policies");
        fs::create_dir_all(&policies).unwrap();
        fs::write(
            dir.join("server.conf"),
            format!(
                "[server]\nhostname=127.0.0.1\nport={port}\ncertificate_path={}\nkey_path={}\n\
                 ca_path={}\nauth_suite=TLS1.2\nenable_tls_client_auth=True\n\
                 database_path={}\npolicy_path={}\nlogging_level=INFO\n",
                pki.server_cert.display(),
                pki.server_key.display(),
                pki.ca.display(),
                db.display(),
                policies.display()
            ),
        )
        .unwrap();
        let log = dir.join("server.log");
        let mut server = KmipServer {
            port,
            dir,
            log,
            child: None,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let out = fs::File::create(self.dir.join("stdout")).unwrap();
        let err = fs::File::create(self.dir.join("stderr")).unwrap();
        let child = Command::new("/usr/bin/python3")
            .arg(PYKMIP_SERVER)
            .arg("-f")
            .arg(self.dir.join("server.conf"))
            .arg("-l")
            .arg(&self.log)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {PYKMIP_SERVER}: {e}"));
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!(
                    "pykmip-server exited at start ({status}):\n{}",
                    self.diagnostics()
                );
            }
            if Instant::now() > deadline {
                self.stop();
                panic!(
                    "pykmip-server did not listen within {START_DEADLINE:?}:\n{}",
                    self.diagnostics()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The tail of the server's stderr and log, for failure messages.
    pub fn diagnostics(&self) -> String {
        let tail = |p: PathBuf| {
            let s = fs::read_to_string(&p).unwrap_or_default();
            let lines: Vec<&str> = s.lines().collect();
            format!(
                "== {}\n{}",
                p.display(),
                lines[lines.len().saturating_sub(40)..].join("\n")
            )
        };
        format!("{}\n{}", tail(self.dir.join("stderr")), tail(self.log.clone()))
    }

    /// Whether the server process is running.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server's whole process group with SIGKILL and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pgid = child.id() as i32;
            // SAFETY: kill(2) on our own child's process group; no memory is involved.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
            let _ = child.wait();
        }
    }

    /// Stops the server and starts it again on the same port and database.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for KmipServer {
    fn drop(&mut self) {
        self.stop();
    }
}
