//! The audit log of a KMS-backed keystore: one line per unwrap of a data key and per
//! key operation, appended to `BACKING/.ezfs/audit.log` (mode 0600, rotated by size).
//!
//! The reference is HDFS's KMS audit log, which records each operation, key and user;
//! ezfs records, space-separated `field=value` pairs in a fixed order:
//! ```text
//! time=2026-12-03T16:44:38.123Z op=UNWRAP key=k1@2 uid=1000 pid=4242 file=9f0c…(32 hex) result=ok ms=3
//! ```
//! `op` is UNWRAP (a file's DEK, at open), UNWRAP_NAMES (a zone's name secret), WRAP
//! (a re-wrap), GENERATE (a batch of pooled EDEKs; `n=` how many), a key command
//! (CREATE, ROLL, DELETE, PRUNE, GRANT, REVOKE) or DESTROY (a version revoked and
//! destroyed in the KMS by a prune or a delete). `uid`/`pid` are the process the daemon
//! acted for (0/0 for its own background work); `file` is `-` where no file is
//! involved; `result` is `ok`, or `error:` and the reason with spaces as `_`. A line is
//! written with one `write(2)` on a file opened `O_APPEND`, so lines from the daemon
//! and the command line never interleave. When the log passes its size limit it is
//! renamed to `audit.log.1` (the older copies shift up to `audit.log.4`, the oldest is
//! dropped).

use parking_lot::Mutex;
use std::cell::Cell;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The log's file name in `.ezfs`.
pub const AUDIT_LOG: &str = "audit.log";
/// Size at which the log is rotated.
pub const ROTATE_AT: u64 = 64 << 20;
/// Rotated copies kept (`audit.log.1` … `audit.log.4`).
const KEEP: u32 = 4;

thread_local! {
    /// Who the current thread works for: set around a FUSE request's open or create.
    static ACTING_FOR: Cell<(u32, u32)> = const { Cell::new((0, 0)) };
}

/// Until dropped, audit lines written by this thread name `uid`/`pid`.
pub struct ActingFor((u32, u32));

/// Marks this thread as working for process `pid` of user `uid`.
pub fn acting_for(uid: u32, pid: u32) -> ActingFor {
    ActingFor(ACTING_FOR.with(|c| c.replace((uid, pid))))
}

impl Drop for ActingFor {
    fn drop(&mut self) {
        ACTING_FOR.with(|c| c.set(self.0));
    }
}

/// One event to record.
pub struct Event<'a> {
    /// The operation (`UNWRAP`, `CREATE`, …).
    pub op: &'a str,
    /// The key name.
    pub key: &'a str,
    /// The key version, if one is involved.
    pub version: Option<u32>,
    /// The file's id, if a file is involved.
    pub file: Option<&'a [u8; 16]>,
    /// Extra `field=value` text (e.g. `n=50`), or empty.
    pub extra: String,
}

/// An append-only audit log file.
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<Option<File>>,
}

fn open_log(path: &Path) -> std::io::Result<File> {
    // not through a symlink planted in `.ezfs` or as the log: see keys::atomic
    super::atomic::open_append(path, 0o600)
}

/// `t` as an ISO 8601 UTC time with milliseconds.
pub fn iso_time(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // civil-from-days (Howard Hinnant's algorithm)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
}

impl AuditLog {
    /// The audit log of the keystore in directory `ezfs_dir` (`BACKING/.ezfs`).
    pub fn new(ezfs_dir: &Path) -> AuditLog {
        AuditLog {
            path: ezfs_dir.join(AUDIT_LOG),
            file: Mutex::new(None),
        }
    }

    /// Appends one line for `e`, which took from `started` until now, with `result`.
    /// A log that cannot be written is reported once per failure on the daemon's log
    /// and does not fail the operation (the KMS keeps its own audit trail).
    pub fn record<T, E: std::fmt::Display>(&self, e: &Event<'_>, started: Instant, result: &Result<T, E>) {
        let (uid, pid) = ACTING_FOR.with(Cell::get);
        let mut line = format!("time={} op={} key={}", iso_time(SystemTime::now()), e.op, e.key);
        if let Some(v) = e.version {
            line.push_str(&format!("@{v}"));
        }
        line.push_str(&format!(
            " uid={uid} pid={pid} file={}",
            e.file.map_or("-".into(), |f| crate::text::hex(f))
        ));
        match result {
            Ok(_) => line.push_str(" result=ok"),
            Err(why) => {
                let why: String = why
                    .to_string()
                    .chars()
                    .map(|c| if c.is_whitespace() { '_' } else { c })
                    .collect();
                line.push_str(&format!(" result=error:{why}"));
            }
        }
        line.push_str(&format!(" ms={}", started.elapsed().as_millis()));
        if !e.extra.is_empty() {
            line.push(' ');
            line.push_str(&e.extra);
        }
        line.push('\n');
        if let Err(err) = self.append(line.as_bytes()) {
            log::error!("cannot write the audit log {}: {err}", self.path.display());
        }
    }

    fn append(&self, line: &[u8]) -> std::io::Result<()> {
        let mut slot = self.file.lock();
        let file = match slot.take() {
            Some(f) => f,
            None => open_log(&self.path)?,
        };
        let file = if file.metadata()?.len() >= ROTATE_AT {
            self.rotate()?;
            open_log(&self.path)?
        } else {
            file
        };
        (&file).write_all(line)?;
        *slot = Some(file);
        Ok(())
    }

    /// Shifts `audit.log` to `.1`, `.1` to `.2`, …, dropping the oldest.
    fn rotate(&self) -> std::io::Result<()> {
        let numbered = |n: u32| std::ffi::OsString::from(format!("{AUDIT_LOG}.{n}"));
        for n in (1..KEEP).rev() {
            match super::atomic::rename_beside(&self.path, &numbered(n), &numbered(n + 1)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        super::atomic::rename_beside(&self.path, AUDIT_LOG.as_ref(), &numbered(1))
    }
}

/// Records `op` on key `name` (a command-line key operation) in the audit log of the
/// keystore in `ezfs_dir`.
pub fn record_command<T, E: std::fmt::Display>(
    ezfs_dir: &Path,
    op: &str,
    name: &str,
    version: Option<u32>,
    result: &Result<T, E>,
) {
    // SAFETY: getuid and getpid cannot fail.
    let (uid, pid) = unsafe { (libc::getuid(), libc::getpid() as u32) };
    let _me = acting_for(uid, pid);
    let e = Event {
        op,
        key: name,
        version,
        file: None,
        extra: String::new(),
    };
    AuditLog::new(ezfs_dir).record(&e, Instant::now(), result);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::time::Duration;

    #[test]
    fn times_are_iso_utc() {
        assert_eq!(iso_time(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_796_316_278_123);
        assert_eq!(iso_time(t), "2026-12-03T16:44:38.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(iso_time(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn lines_name_the_caller_and_the_result_and_the_log_rotates() {
        let d = tempfile::tempdir().unwrap();
        let log = AuditLog::new(d.path());
        {
            let _who = acting_for(1000, 42);
            let e = Event {
                op: "UNWRAP",
                key: "k1",
                version: Some(2),
                file: Some(&[0xab; 16]),
                extra: String::new(),
            };
            log.record::<(), &str>(&e, Instant::now(), &Ok(()));
            log.record::<(), _>(&e, Instant::now(), &Err("KMS unavailable: all down"));
        }
        let text = std::fs::read_to_string(d.path().join(AUDIT_LOG)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let ab = "ab".repeat(16);
        assert!(
            lines[0].contains(&format!(
                "op=UNWRAP key=k1@2 uid=1000 pid=42 file={ab} result=ok ms="
            )),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].contains("result=error:KMS_unavailable:_all_down"),
            "{}",
            lines[1]
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.path().join(AUDIT_LOG))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // past the limit: renamed to .1 and a new log begins
        let f = OpenOptions::new()
            .append(true)
            .open(d.path().join(AUDIT_LOG))
            .unwrap();
        f.set_len(ROTATE_AT).unwrap();
        let e = Event {
            op: "CREATE",
            key: "k2",
            version: None,
            file: None,
            extra: String::new(),
        };
        log.record::<(), &str>(&e, Instant::now(), &Ok(()));
        let fresh = std::fs::read_to_string(d.path().join(AUDIT_LOG)).unwrap();
        assert_eq!(fresh.lines().count(), 1);
        assert!(
            fresh.contains("op=CREATE key=k2 uid=0 pid=0 file=- result=ok"),
            "{fresh}"
        );
        assert_eq!(
            std::fs::metadata(d.path().join("audit.log.1")).unwrap().len(),
            ROTATE_AT
        );
    }

    #[test]
    fn the_log_is_never_written_through_a_symlink() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let e = Event {
            op: "CREATE",
            key: "k",
            version: None,
            file: None,
            extra: String::new(),
        };
        // `.ezfs` itself replaced by a symlink
        std::os::unix::fs::symlink(&real, d.path().join("link")).unwrap();
        AuditLog::new(&d.path().join("link")).record::<(), &str>(&e, Instant::now(), &Ok(()));
        assert!(
            !real.join(AUDIT_LOG).exists(),
            "written through a symlinked directory"
        );
        // the log replaced by a symlink
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"untouched").unwrap();
        std::os::unix::fs::symlink(&victim, real.join(AUDIT_LOG)).unwrap();
        AuditLog::new(&real).record::<(), &str>(&e, Instant::now(), &Ok(()));
        assert_eq!(std::fs::read(&victim).unwrap(), b"untouched");
    }
}
