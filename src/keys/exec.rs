//! An external key provider: a program that holds zone keys (an operator's KMS) and
//! speaks a line protocol with ezfs over its standard input and output.
//!
//! One JSON object per line each way; the program answers each request in order, and
//! every answer echoes its request's `id` (a number), so that an extra or a missing
//! answer line can never be taken for the answer to a later request:
//! ```text
//! -> {"id":1,"op":"create","key":"k1"}                      <- {"id":1,"ok":true,"version":1}
//! -> {"id":2,"op":"roll","key":"k1"}                        <- {"id":2,"ok":true,"version":2}
//! -> {"id":3,"op":"wrap","key":"k1","version":2,"aad":HEX,"dek":HEX}    <- {"id":3,"ok":true,"edek":HEX}
//! -> {"id":4,"op":"unwrap","key":"k1","version":2,"aad":HEX,"edek":HEX} <- {"id":4,"ok":true,"dek":HEX}
//!                                  on failure: <- {"id":N,"ok":false,"error":"one sentence"}
//! ```
//! DEKs are 32 bytes; EDEKs must be exactly 60 bytes (the header's field), e.g.
//! nonce(12) || AES-256-GCM(DEK) || tag(16); `aad` must be bound into the EDEK, so
//! unwrap with other associated data fails. The program is started on first use and
//! kept running; a request unanswered within the timeout kills it (the next request
//! starts it again), and the caller gets an error: the filesystem answers EIO for that
//! file and keeps serving everything else.

use super::KeyError;
use crate::crypto::{Key, KEY_LEN, WRAPPED_KEY_LEN};
use crate::text::{hex, unhex_into};
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::json;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// The prefix of a provider setting that names a program.
pub const EXEC_PREFIX: &str = "exec:";
/// How long one request may take unless `EZFS_KEY_PROVIDER_TIMEOUT` (seconds) says.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A running provider program.
struct Running {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    /// Bytes read past the last answered line.
    pending: Vec<u8>,
}

impl Drop for Running {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.pending);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A key provider program, started on demand; requests are answered one at a time.
pub struct ExecProvider {
    argv: Vec<String>,
    timeout: Duration,
    running: Mutex<Option<Running>>,
    /// The id of the last request sent.
    last_id: std::sync::atomic::AtomicU64,
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    id: Option<u64>,
    ok: bool,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    version: Option<u32>,
    #[serde(default)]
    edek: Option<String>,
    #[serde(default)]
    dek: Option<String>,
}

impl Drop for Answer {
    fn drop(&mut self) {
        if let Some(d) = &mut self.dek {
            zeroize::Zeroize::zeroize(d);
        }
    }
}

fn failed(why: impl std::fmt::Display) -> KeyError {
    KeyError::Other(format!("key provider: {why}"))
}

/// Decodes an answer's hex of exactly `N` bytes straight into a zeroizing buffer (a DEK
/// must leave no copy behind).
fn unhex_secret<const N: usize>(s: &str) -> Option<Zeroizing<[u8; N]>> {
    let mut out = Zeroizing::new([0u8; N]);
    unhex_into(s, &mut out[..]).then_some(out)
}

impl ExecProvider {
    /// Parses a setting `exec:PROGRAM ARGS…` (split on white space, no shell).
    pub fn from_setting(setting: &str) -> Result<ExecProvider, KeyError> {
        let argv: Vec<String> = setting
            .strip_prefix(EXEC_PREFIX)
            .ok_or_else(|| KeyError::Other(format!("unknown key provider '{setting}': use exec:PROGRAM")))?
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if argv.is_empty() {
            return Err(KeyError::Other("key provider 'exec:' names no program".into()));
        }
        let timeout = std::env::var("EZFS_KEY_PROVIDER_TIMEOUT")
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|s| *s > 0.0)
            .map_or(DEFAULT_TIMEOUT, Duration::from_secs_f64);
        Ok(ExecProvider {
            argv,
            timeout,
            running: Mutex::new(None),
            last_id: Default::default(),
        })
    }

    fn start(&self) -> Result<Running, KeyError> {
        let mut child = Command::new(&self.argv[0])
            .args(&self.argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| failed(format!("cannot start {}: {e}", self.argv[0])))?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        Ok(Running {
            child,
            stdin,
            stdout,
            pending: Vec::new(),
        })
    }

    fn call(&self, req: &serde_json::Value) -> Result<Answer, KeyError> {
        self.call_line(|id| {
            let mut req = req.clone();
            req["id"] = id.into();
            Zeroizing::new(req.to_string())
        })
    }

    /// Sends one request line (`req(id)`) and waits (up to the timeout) for its answer
    /// line, which must carry the same id.
    fn call_line(&self, req: impl FnOnce(u64) -> Zeroizing<String>) -> Result<Answer, KeyError> {
        let mut slot = self.running.lock();
        if slot.is_none() {
            *slot = Some(self.start()?);
        }
        let id = self.last_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let r = slot.as_mut().expect("started");
        let result = Self::exchange(r, &req(id), self.timeout).and_then(|line| {
            let answer: Answer =
                serde_json::from_slice(&line).map_err(|e| failed(format!("unreadable answer: {e}")))?;
            match answer.id {
                Some(got) if got == id => Ok(answer),
                got => Err(failed(format!(
                    "an answer to another request (id {}, expected {id}); restarting it",
                    got.map_or("none".into(), |g| g.to_string())
                ))),
            }
        });
        if result.is_err() {
            // a provider that hung, died or spoke nonsense is restarted on next use
            *slot = None;
        }
        let answer = result?;
        if !answer.ok {
            return Err(failed(answer.error.as_deref().unwrap_or("request refused")));
        }
        Ok(answer)
    }

    fn exchange(r: &mut Running, req: &str, timeout: Duration) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let mut line = Zeroizing::new(Vec::with_capacity(req.len() + 1));
        line.extend_from_slice(req.as_bytes());
        line.push(b'\n');
        r.stdin
            .write_all(&line)
            .and_then(|_| r.stdin.flush())
            .map_err(|e| failed(format!("cannot send a request: {e}")))?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(end) = r.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = r.pending.drain(..=end).collect();
                if r.pending.is_empty() {
                    // the moved-out bytes (a DEK, for unwrap) stay in the spare capacity
                    zeroize::Zeroize::zeroize(&mut r.pending);
                }
                return Ok(Zeroizing::new(line));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(failed(format!("no answer within {:?}; restarting it", timeout)));
            }
            let mut pfd = libc::pollfd {
                fd: r.stdout.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(failed(e));
            }
            if n == 0 {
                continue;
            }
            let mut buf = [0u8; 4096];
            let got = std::io::Read::read(&mut r.stdout, &mut buf).map_err(failed)?;
            if got == 0 {
                return Err(failed("the program exited"));
            }
            r.pending.extend_from_slice(&buf[..got]);
            buf.fill(0);
        }
    }

    fn version_of(answer: Answer) -> Result<u32, KeyError> {
        answer
            .version
            .filter(|&v| v > 0)
            .ok_or_else(|| failed("answer without a positive version"))
    }

    /// Asks the provider to create key `name`; returns its first version.
    pub fn create(&self, name: &str) -> Result<u32, KeyError> {
        Self::version_of(self.call(&json!({"op": "create", "key": name}))?)
    }

    /// Asks the provider for a new version of `name`; returns it.
    pub fn roll(&self, name: &str) -> Result<u32, KeyError> {
        Self::version_of(self.call(&json!({"op": "roll", "key": name}))?)
    }

    /// Asks the provider to wrap `dek` with `name@version`, binding `aad`; returns the EDEK.
    pub fn wrap(
        &self,
        name: &str,
        version: u32,
        aad: &[u8],
        dek: &Key,
    ) -> Result<[u8; WRAPPED_KEY_LEN], KeyError> {
        let dek_hex = Zeroizing::new(hex(dek.expose()));
        // built by hand so that no copy of the DEK outlives the zeroized line
        let a = self.call_line(|id| {
            Zeroizing::new(format!(
                r#"{{"id":{id},"op":"wrap","key":{},"version":{version},"aad":"{}","dek":"{}"}}"#,
                serde_json::to_string(name).expect("serializes"),
                hex(aad),
                dek_hex.as_str()
            ))
        })?;
        let edek = a
            .edek
            .as_deref()
            .and_then(unhex_secret::<WRAPPED_KEY_LEN>)
            .ok_or_else(|| {
                failed(format!(
                    "wrap answer needs 'edek': {WRAPPED_KEY_LEN} bytes in hex"
                ))
            })?;
        Ok(*edek)
    }

    /// Asks the provider to unwrap `edek`, made with `name@version` and `aad`; returns the DEK.
    pub fn unwrap(
        &self,
        name: &str,
        version: u32,
        aad: &[u8],
        edek: &[u8; WRAPPED_KEY_LEN],
    ) -> Result<Key, KeyError> {
        let req =
            json!({"op": "unwrap", "key": name, "version": version, "aad": hex(aad), "edek": hex(edek)});
        let a = self.call(&req).map_err(|e| {
            failed(format!(
                "unwrapping with {name}@{version}: {}",
                e.to_string().trim_start_matches("key provider: ")
            ))
        })?;
        let dek = a
            .dek
            .as_deref()
            .and_then(unhex_secret::<KEY_LEN>)
            .ok_or_else(|| failed(format!("unwrap answer needs 'dek': {KEY_LEN} bytes in hex")))?;
        Ok(Key::from_slice(&dek[..]).expect("32 bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A provider program made of a shell script.
    fn script(dir: &std::path::Path, body: &str) -> String {
        let p = dir.join("kms.sh");
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        format!("exec:{}", p.display())
    }

    /// The shell snippet that sets $id to the request's id.
    const ID: &str = r#"id=$(printf '%s' "$line" | sed 's/.*"id":\([0-9]*\).*/\1/')"#;

    #[test]
    fn answers_are_checked() {
        let d = tempfile::tempdir().unwrap();
        let edek = "ab".repeat(WRAPPED_KEY_LEN);
        let p = ExecProvider::from_setting(&script(
            d.path(),
            &format!(
                r#"while read -r line; do
  {ID}
  case "$line" in
    *'"create"'*) echo '{{"id":'$id',"ok":true,"version":1}}' ;;
    *'"roll"'*) echo '{{"id":'$id',"ok":true}}' ;;
    *'"wrap"'*) echo '{{"id":'$id',"ok":true,"edek":"{edek}"}}' ;;
    *) echo '{{"id":'$id',"ok":false,"error":"no such thing"}}' ;;
  esac
done"#
            ),
        ))
        .unwrap();
        assert_eq!(p.create("k").unwrap(), 1);
        let e = p.roll("k").unwrap_err().to_string();
        assert!(e.contains("without a positive version"), "{e}");
        assert_eq!(
            p.wrap("k", 1, b"aad", &Key::random()).unwrap(),
            [0xab; WRAPPED_KEY_LEN]
        );
        let e = p
            .unwrap("k", 1, b"aad", &[0; WRAPPED_KEY_LEN])
            .unwrap_err()
            .to_string();
        assert!(e.contains("no such thing"), "{e}");
    }

    /// A provider that answers one request twice: the extra line is never taken for
    /// the answer to the next request (which would shift every answer by one).
    #[test]
    fn an_extra_answer_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = ExecProvider::from_setting(&script(
            d.path(),
            &format!(
                r#"while read -r line; do
  {ID}
  case "$line" in
    *'"create"'*) echo '{{"id":'$id',"ok":true,"version":1}}'; echo '{{"id":'$id',"ok":true,"version":1}}' ;;
    *) echo '{{"id":'$id',"ok":true,"version":7}}' ;;
  esac
done"#
            ),
        ))
        .unwrap();
        assert_eq!(p.create("k").unwrap(), 1);
        let e = p.roll("k").unwrap_err().to_string();
        assert!(e.contains("another request"), "{e}");
        // restarted: the next request is answered by a fresh program
        assert_eq!(p.roll("k").unwrap(), 7);
    }

    #[test]
    fn a_silent_provider_times_out_and_is_restarted() {
        let d = tempfile::tempdir().unwrap();
        let count = d.path().join("starts");
        let setting = script(
            d.path(),
            &format!("echo x >> {}\nread -r line; sleep 30", count.display()),
        );
        let mut p = ExecProvider::from_setting(&setting).unwrap();
        p.timeout = Duration::from_millis(300);
        let e = p.create("k").unwrap_err().to_string();
        assert!(e.contains("no answer within"), "{e}");
        let e = p.create("k").unwrap_err().to_string();
        assert!(e.contains("no answer within"), "{e}");
        let starts = std::fs::read_to_string(&count).unwrap();
        assert_eq!(starts.lines().count(), 2, "killed and started again");
    }

    #[test]
    fn bad_settings() {
        assert!(ExecProvider::from_setting("vault:x").is_err());
        assert!(ExecProvider::from_setting("exec:").is_err());
        let p = ExecProvider::from_setting("exec:/nonexistent/kms").unwrap();
        let e = p.create("k").unwrap_err().to_string();
        assert!(e.contains("cannot start /nonexistent/kms"), "{e}");
    }
}
