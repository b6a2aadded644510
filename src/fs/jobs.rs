//! The records of re-encryption jobs (`zone reencrypt --status`), in memory and in
//! `BACKING/.ezfs/reencrypt.json`: what each zone's last job did, and whether it can
//! be resumed. A job that was running when the daemon died shows as interrupted.
//!
//! On shared storage the records are shared by every host's daemon: each reads the
//! file when asked and updates it under `.ezfs/reencrypt.lock`, and a job holds
//! `.ezfs/job-ZONEID.lock` (an OFD lock, which dies with its host) while it runs, so
//! one job runs per zone across all hosts and a record that says "running" with no
//! one holding its lock is a job whose host died: interrupted, and resumable from
//! any host.

use crate::backdir::{ofd, sys};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

/// File of the job status records, inside `.ezfs`.
const STATUS_FILE: &str = "reencrypt.json";
/// Shared storage: serializes updates of the records between hosts.
const STATUS_LOCK: &str = "reencrypt.lock";

/// Where a zone's re-encryption job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// No job has run on this zone.
    None,
    /// The job is working through the zone's files.
    Running,
    /// The job went through every file (some may have failed: see `files_failed`).
    Completed,
    /// The daemon stopped (or was unmounted) while the job ran: run it again to finish.
    Interrupted,
    /// Stopped by `zone reencrypt --cancel`: run it again to finish.
    Cancelled,
}

impl JobState {
    /// Whether running the job again resumes it.
    pub fn resumable(self) -> bool {
        matches!(self, JobState::Interrupted | JobState::Cancelled)
    }
}

/// One zone's re-encryption status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobStatus {
    /// Zone root, relative to the mount root ("/dir").
    pub zone: String,
    /// The zone's id, in hex: the job's key in the records.
    pub zone_id: String,
    /// The name of the zone's key.
    pub key: String,
    /// The key version files are brought to.
    pub target_version: u32,
    /// New DEKs and re-encrypted blocks, not just re-wrapped EDEKs.
    pub data: bool,
    /// Where the job stands.
    pub state: JobState,
    /// Files in the zone when the job started.
    pub files_total: u64,
    /// Files this run changed.
    pub files_done: u64,
    /// Files that already used the target version (or were empty).
    pub files_current: u64,
    /// Files that failed (the first few are in `failures`).
    pub files_failed: u64,
    /// "path: why", the first few.
    pub failures: Vec<String>,
    /// Unix seconds.
    pub started: u64,
    /// Unix seconds when the run ended; none while it runs.
    pub finished: Option<u64>,
    /// Milliseconds this run took (updated at checkpoints while it runs).
    pub elapsed_ms: u64,
}

impl JobStatus {
    /// The state in words, with the mode (`+data` for a `--data` job).
    pub fn state_name(&self) -> String {
        let state = match self.state {
            JobState::None => "none",
            JobState::Running => "running",
            JobState::Completed if self.files_failed > 0 => "failures",
            JobState::Completed => "completed",
            JobState::Interrupted => "interrupted",
            JobState::Cancelled => "cancelled",
        };
        format!("{state}{}", if self.data { "+data" } else { "" })
    }

    /// Files handled so far (done, current or failed).
    pub fn files_seen(&self) -> u64 {
        self.files_done + self.files_current + self.files_failed
    }
}

/// The status records, in memory and in `.ezfs/reencrypt.json`.
pub struct Jobs {
    dir: PathBuf,
    path: PathBuf,
    map: parking_lot::Mutex<BTreeMap<String, JobStatus>>,
    /// Shared storage: the file is the truth, other hosts run jobs too.
    shared: bool,
}

/// A zone's job lock across hosts (shared storage), held while the job runs.
pub struct JobLock(#[allow(dead_code)] Option<std::fs::File>);

/// The records in `dir`'s status file.
fn read_records(dir: &Path) -> BTreeMap<String, JobStatus> {
    sys::open_at(
        sys::at_cwd(),
        dir.as_os_str(),
        libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    )
    .ok()
    .and_then(|d| crate::backdir::resolve::read_small(d.as_fd(), OsStr::new(STATUS_FILE), 64 << 20).ok())
    .and_then(|b| serde_json::from_slice(&b).ok())
    .unwrap_or_default()
}

impl Jobs {
    /// Loads the records; jobs that were running are marked interrupted.
    pub fn load(ezfs_dir: &Path) -> Jobs {
        let mut map = read_records(ezfs_dir);
        for j in map.values_mut().filter(|j| j.state == JobState::Running) {
            j.state = JobState::Interrupted;
        }
        Jobs {
            dir: ezfs_dir.to_path_buf(),
            path: ezfs_dir.join(STATUS_FILE),
            map: parking_lot::Mutex::new(map),
            shared: false,
        }
    }

    /// The records of shared storage, read from the file whenever asked.
    pub fn shared(ezfs_dir: &Path) -> Jobs {
        Jobs {
            shared: true,
            ..Jobs::load(ezfs_dir)
        }
    }

    pub(super) fn set(&self, j: &JobStatus) {
        let mut map = self.map.lock();
        // shared storage: other hosts' records as they are now, this one's updated
        let _lock = match self.shared {
            true => match crate::keys::atomic::FileLock::acquire(&self.dir.join(STATUS_LOCK)) {
                Ok(l) => {
                    *map = read_records(&self.dir);
                    Some(l)
                }
                Err(e) => {
                    log::warn!("cannot lock the re-encryption records: {e}");
                    None
                }
            },
            false => None,
        };
        map.insert(j.zone_id.clone(), j.clone());
        let data = serde_json::to_vec_pretty(&*map).expect("serializes");
        if let Err(e) = crate::keys::atomic::write_file(&self.path, &data, 0o600) {
            log::warn!(
                "cannot record re-encryption status in {}: {e}",
                self.path.display()
            );
        }
    }

    /// The record of zone `zone_id`'s last job (shared storage: as any host left it;
    /// a running job whose lock no one holds was interrupted).
    pub fn get(&self, zone_id: &str) -> Option<JobStatus> {
        if !self.shared {
            return self.map.lock().get(zone_id).cloned();
        }
        let mut j = read_records(&self.dir).remove(zone_id)?;
        if j.state == JobState::Running && !self.job_lock_held(zone_id) {
            j.state = JobState::Interrupted;
        }
        Some(j)
    }

    fn job_lock_path(&self, zone_id: &str) -> PathBuf {
        // zone ids are hex: a plain file name
        self.dir.join(format!("job-{zone_id}.lock"))
    }

    /// Whether some host's job holds zone `zone_id`'s job lock.
    fn job_lock_held(&self, zone_id: &str) -> bool {
        crate::keys::atomic::open_lock_file(&self.job_lock_path(zone_id))
            .and_then(|f| ofd::test(f.as_fd(), ofd::Kind::Write, 0, 1))
            .is_ok_and(|c| c.is_some())
    }

    /// Claims the job of zone `zone_id` for this daemon: `None` if a job of it runs on
    /// another host (shared storage); the lock is held until the returned value drops.
    pub(super) fn claim(&self, zone_id: &str) -> std::io::Result<Option<JobLock>> {
        if !self.shared {
            return Ok(Some(JobLock(None)));
        }
        let f = crate::keys::atomic::open_lock_file(&self.job_lock_path(zone_id))?;
        Ok(ofd::set(f.as_fd(), ofd::Kind::Write, 0, 1, false)?.then(|| JobLock(Some(f))))
    }
}
