//! The records of re-encryption jobs (`zone reencrypt --status`), in memory and in
//! `BACKING/.ezfs/reencrypt.json`: what each zone's last job did, and whether it can
//! be resumed. A job that was running when the daemon died shows as interrupted.

use crate::backdir::sys;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

/// File of the job status records, inside `.ezfs`.
const STATUS_FILE: &str = "reencrypt.json";

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
    path: PathBuf,
    map: parking_lot::Mutex<BTreeMap<String, JobStatus>>,
}

impl Jobs {
    /// Loads the records; jobs that were running are marked interrupted.
    pub fn load(ezfs_dir: &Path) -> Jobs {
        let path = ezfs_dir.join(STATUS_FILE);
        let mut map: BTreeMap<String, JobStatus> = sys::open_at(
            sys::at_cwd(),
            ezfs_dir.as_os_str(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )
        .ok()
        .and_then(|d| crate::backdir::resolve::read_small(d.as_fd(), OsStr::new(STATUS_FILE), 64 << 20).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
        for j in map.values_mut().filter(|j| j.state == JobState::Running) {
            j.state = JobState::Interrupted;
        }
        Jobs {
            path,
            map: parking_lot::Mutex::new(map),
        }
    }

    pub(super) fn set(&self, j: &JobStatus) {
        let mut map = self.map.lock();
        map.insert(j.zone_id.clone(), j.clone());
        let data = serde_json::to_vec_pretty(&*map).expect("serializes");
        if let Err(e) = crate::keys::atomic::write_file(&self.path, &data, 0o600) {
            log::warn!(
                "cannot record re-encryption status in {}: {e}",
                self.path.display()
            );
        }
    }

    /// The record of zone `zone_id`'s last job.
    pub fn get(&self, zone_id: &str) -> Option<JobStatus> {
        self.map.lock().get(zone_id).cloned()
    }
}
