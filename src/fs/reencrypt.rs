//! Zone re-encryption jobs on a live mount (HDFS's `reencryptZone` and
//! `listReencryptionStatus`).
//!
//! A job walks one zone (nested zones keep their own keys) and brings every file to the
//! zone key's newest version, one crash-safe step per file (see `fs::rekey`). It
//! runs in a thread of the mount daemon, so the filesystem keeps serving, renames
//! included: a file renamed away from the walk is found again by the next walk or by
//! the renames noted meanwhile, and the job ends only once both find nothing left. The
//! zone root is held open and walked through its descriptor, so a rename of the root
//! (or of a directory above it) does not send the job to a stale path. The
//! status of every job is kept in `BACKING/.ezfs/reencrypt.json`; a job that was
//! running when the daemon died shows as interrupted, and running it again finishes it
//! (files already done are recognized by their key version and skipped).

use super::inode::handle_of_path;
use super::rekey::{Outcome, Target};
use super::Core;
use crate::keys::KeyProvider;
use crate::zone::is_rekey_temp;
use crate::zone::walk::{zone_files, Nested};
use crate::zone::Zone;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// File of the job status records, inside `.ezfs`.
const STATUS_FILE: &str = "reencrypt.json";
/// Failures kept per job (the count is exact).
const MAX_FAILURES: usize = 100;
/// Walks of the zone before files still moving are reported as failures.
const MAX_ROUNDS: u32 = 5;
/// How often progress is synced to disk and recorded.
const CHECKPOINT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// No job has run on this zone.
    None,
    Running,
    Completed,
    /// The daemon stopped while the job ran: run it again to finish.
    Interrupted,
}

/// One zone's re-encryption status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobStatus {
    /// Zone root, relative to the mount root ("/dir").
    pub zone: String,
    pub zone_id: String,
    pub key: String,
    /// The key version files are brought to.
    pub target_version: u32,
    /// New DEKs and re-encrypted blocks, not just re-wrapped EDEKs.
    pub data: bool,
    pub state: JobState,
    /// Files in the zone when the job started.
    pub files_total: u64,
    /// Files this run changed.
    pub files_done: u64,
    /// Files that already used the target version (or were empty).
    pub files_current: u64,
    pub files_failed: u64,
    /// "path: why", the first few.
    pub failures: Vec<String>,
    /// Unix seconds.
    pub started: u64,
    pub finished: Option<u64>,
    pub elapsed_ms: u64,
}

impl JobStatus {
    /// Files handled so far (done, current or failed).
    pub fn files_seen(&self) -> u64 {
        self.files_done + self.files_current + self.files_failed
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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
        let mut map: BTreeMap<String, JobStatus> = std::fs::read(&path)
            .ok()
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

    fn set(&self, j: &JobStatus) {
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

fn syncfs(dir: &File) {
    // SAFETY: valid descriptor.
    unsafe { libc::syncfs(dir.as_raw_fd()) };
}

/// The zone root of a running job, open: walked through `/proc/self/fd`, it is found
/// wherever renames take it.
struct Root {
    dir: File,
    /// `/proc/self/fd/N` of `dir`.
    link: PathBuf,
}

impl Root {
    fn open(dir: &Path) -> std::io::Result<Root> {
        let dir = File::open(dir)?;
        let link = super::sys::fd_link(dir.as_raw_fd());
        Ok(Root { dir, link })
    }

    /// Path `p` (under [`Root::link`] or absolute) with the root's current path in it:
    /// for messages.
    fn shown(&self, p: &Path) -> PathBuf {
        match (p.strip_prefix(&self.link), super::sys::dir_path(&self.dir)) {
            (Ok(rel), Some(now)) => now.join(rel),
            _ => p.to_path_buf(),
        }
    }
}

impl Core {
    /// Starts re-encrypting the zone whose root is `rel`; returns its first status.
    /// `caller` must be root or own the zone root.
    pub fn reencrypt_start(
        self: &Arc<Core>,
        rel: &str,
        data: bool,
        caller: u32,
    ) -> Result<JobStatus, String> {
        if self.read_only {
            return Err("the mount is read-only".into());
        }
        let dir = self.resolve(rel)?;
        let shown = format!("/{}", self.relative(&dir));
        let root = Root::open(&dir).map_err(|e| format!("{shown}: {e}"))?;
        let meta = root.dir.metadata().map_err(|e| format!("{shown}: {e}"))?;
        if caller != 0 && std::os::unix::fs::MetadataExt::uid(&meta) != caller {
            return Err(format!("{shown}: only its owner or root may re-encrypt the zone"));
        }
        let marker = match self.zone_root_of(&dir) {
            Some((root, Ok(m))) if root == dir => m,
            Some((root, Ok(_))) => {
                return Err(format!(
                    "{shown} is not a zone root; its zone is /{}",
                    self.relative(&root)
                ))
            }
            Some((_, Err(e))) => return Err(format!("{shown}: {e}")),
            None => return Err(format!("{shown} is not an encryption zone")),
        };
        let _ = self.keys.reload();
        let version = self
            .keys
            .current_version(&marker.key)
            .map_err(|e| e.to_string())?;
        let zone = Zone {
            id: marker.zone_id,
            key: marker.key.clone(),
            broken: None,
        };
        if super::sys::dir_path(&root.dir).as_deref() != Some(dir.as_path()) {
            return Err(format!("{shown} was renamed while the job started; run it again"));
        }
        let status = JobStatus {
            zone: shown.clone(),
            zone_id: marker.id_hex(),
            key: marker.key,
            target_version: version,
            data,
            state: JobState::Running,
            files_total: 0,
            files_done: 0,
            files_current: 0,
            files_failed: 0,
            failures: Vec::new(),
            started: now(),
            finished: None,
            elapsed_ms: 0,
        };
        {
            let mut running = self.reencrypting.lock();
            if running.contains_key(&zone.id) {
                return Err(format!(
                    "{shown} is already being re-encrypted; see 'ezfs zone reencrypt --status'"
                ));
            }
            running.insert(zone.id, Vec::new());
        }
        self.jobs.set(&status);
        let core = self.clone();
        let first = status.clone();
        // the walk of a large zone takes seconds: the job does it, the caller polls
        let spawned = std::thread::Builder::new()
            .name("ezfs-reencrypt".into())
            .spawn(move || core.run_job(root, zone, status));
        if let Err(e) = spawned {
            self.reencrypting.lock().remove(&marker.zone_id);
            return Err(format!("cannot start the job: {e}"));
        }
        Ok(first)
    }

    /// Tells a running job of `dir`'s zone that `dir/name` was just renamed there.
    pub(super) fn note_renamed(&self, dir: &super::inode::Inode, name: &std::ffi::OsStr) {
        let mut moved = self.reencrypting.lock();
        if moved.is_empty() {
            return;
        }
        let Some(list) = dir.zone_id().and_then(|z| moved.get_mut(&z)) else {
            return;
        };
        // a directory's descriptor always names a connected path
        if let Ok(fd) = dir.fd() {
            let path = PathBuf::from(super::sys::describe(std::os::fd::AsFd::as_fd(&fd))).join(name);
            if path.starts_with(&self.backing) {
                list.push(path);
            }
        }
    }

    /// The files under the paths renamed in zone `id` since the last call, and whether
    /// some of those paths could not be followed. Renames wait meanwhile, so every
    /// rename finished before the call is noted and every noted path names what is
    /// there now: a file that moved while the job walked is found here, even if its
    /// rename finished just after the walk. Only a rename of the zone root (or above
    /// it) since a path was noted leaves the path unusable; the caller then walks again.
    fn renamed_files(&self, id: [u8; 16], root: &Root) -> (Vec<Target>, bool) {
        let _gate = self.rename_gate.write();
        let paths = self
            .reencrypting
            .lock()
            .get_mut(&id)
            .map(std::mem::take)
            .unwrap_or_default();
        // the root cannot move while the gate is held
        let Some(now) = super::sys::dir_path(&root.dir) else {
            // removed, so empty: nothing is left in the zone
            return (Vec::new(), false);
        };
        let mut out = Vec::new();
        let mut lost = false;
        for p in paths {
            let Ok(rel) = p.strip_prefix(&now) else {
                lost = true;
                continue;
            };
            let p = root.link.join(rel);
            match std::fs::symlink_metadata(&p) {
                // a renamed directory is walked here too: a file leaving it while we
                // walked it unlocked would be missed
                Ok(m) if m.is_dir() => out.extend(self.zone_files_under(&p, &root.link)),
                Ok(m) if m.is_file() => out.push(Target {
                    handle: handle_of_path(&p),
                    path: p,
                    id: (m.dev(), m.ino()),
                }),
                // deleted, or renamed again: then that later rename is noted too
                _ => {}
            }
        }
        (out, lost)
    }

    /// Regular files of the zone rooted at `dir` (nested zones excluded); leftover
    /// temporary files of an interrupted `--data` run are removed on the way.
    fn zone_file_list(&self, dir: &Path) -> Vec<Target> {
        self.zone_files_under(dir, dir)
    }

    /// Like [`Core::zone_file_list`], for the part of the zone at `start`.
    fn zone_files_under(&self, start: &Path, dir: &Path) -> Vec<Target> {
        let mut files = Vec::new();
        // hard links are one file
        let mut inodes = HashSet::new();
        zone_files(start, Some(dir), Nested::Skip, &|_| false, &mut |f, _| {
            let temp = f.file_name().is_some_and(|n| is_rekey_temp(n.as_encoded_bytes()));
            if temp {
                let _ = std::fs::remove_file(f);
            } else if let Some(id) = std::fs::symlink_metadata(f)
                .ok()
                .map(|m| (m.dev(), m.ino()))
                .filter(|id| inodes.insert(*id))
            {
                files.push(Target {
                    path: f.to_path_buf(),
                    handle: handle_of_path(f),
                    id,
                });
            }
        });
        files
    }

    fn run_job(self: Arc<Core>, root: Root, zone: Zone, mut status: JobStatus) {
        let t0 = Instant::now();
        let files = self.zone_file_list(&root.link);
        status.files_total = files.len() as u64;
        self.jobs.set(&status);
        let mut last = Instant::now();
        log::info!(
            "re-encrypting zone {} ({} files) to {}@{}{}",
            status.zone,
            files.len(),
            zone.key,
            status.target_version,
            if status.data { ", with new data keys" } else { "" }
        );
        // files handled, by backing inode, so that a second walk counts nothing twice
        let mut seen: HashSet<(u64, u64)> = HashSet::new();
        let mut retry: Vec<Target> = Vec::new();
        let mut pass = files;
        let mut round = 0;
        loop {
            round += 1;
            let last_round = round >= MAX_ROUNDS;
            for target in pass.drain(..) {
                let step = self.rekey(
                    &target,
                    &zone,
                    status.target_version,
                    status.data,
                    last_round,
                    &mut seen,
                );
                let mut failure = None;
                match step {
                    Ok(Outcome::Done) => status.files_done += 1,
                    Ok(Outcome::Current | Outcome::Empty) => status.files_current += 1,
                    // deleted, or renamed under our feet: the next walk finds it
                    Ok(Outcome::Gone | Outcome::Seen) => continue,
                    Err(e) if e.starts_with("busy") && !last_round => {
                        retry.push(target);
                        continue;
                    }
                    Err(e) => failure = Some(e),
                }
                if let Some(e) = failure {
                    log::error!("re-encrypting {}: {e}", root.shown(&target.path).display());
                    status.files_failed += 1;
                    if status.failures.len() < MAX_FAILURES {
                        status
                            .failures
                            .push(format!("/{}: {e}", self.relative(&root.shown(&target.path))));
                    }
                }
                if last.elapsed() >= CHECKPOINT {
                    syncfs(&root.dir);
                    status.zone = format!("/{}", self.relative(&root.shown(&root.link)));
                    status.elapsed_ms = t0.elapsed().as_millis() as u64;
                    self.jobs.set(&status);
                    last = Instant::now();
                }
            }
            // A file renamed away from its path with no handle to follow it, or moved
            // from a part of the zone not yet walked to one already walked, is found by
            // walking again plus the renames noted since the last look (read after the
            // walk). Once both come back empty, every file of the zone was handled.
            // Files are told apart by the inode found, not by looking their names up
            // again: a rename meanwhile must not hide one.
            // A noted path that the root's rename made unusable counts as something
            // left: the next walk, through the root's descriptor, finds that file.
            let mut listed: HashSet<(u64, u64)> = retry.iter().map(|t| t.id).collect();
            let walked = self.zone_file_list(&root.link);
            let (renamed, lost) = self.renamed_files(zone.id, &root);
            let mut again: Vec<Target> = walked
                .into_iter()
                .chain(renamed)
                .filter(|t| !seen.contains(&t.id) && listed.insert(t.id))
                .collect();
            if retry.is_empty() && again.is_empty() && !lost {
                break;
            }
            if last_round {
                // renamed faster than walked, round after round: say so, do not hide it
                let moving = again.iter().chain(&retry).map(|t| root.shown(&t.path));
                let root_moving = lost.then(|| root.shown(&root.link));
                for path in moving.chain(root_moving) {
                    status.files_failed += 1;
                    if status.failures.len() < MAX_FAILURES {
                        status.failures.push(format!(
                            "/{}: kept moving during the job; run it again",
                            self.relative(&path)
                        ));
                    }
                }
                break;
            }
            if !retry.is_empty() {
                // busy files wait a little for their last close
                std::thread::sleep(Duration::from_millis(200));
            }
            again.append(&mut retry);
            pass = again;
        }
        syncfs(&root.dir);
        status.zone = format!("/{}", self.relative(&root.shown(&root.link)));
        status.state = JobState::Completed;
        status.finished = Some(now());
        status.elapsed_ms = t0.elapsed().as_millis() as u64;
        self.jobs.set(&status);
        self.reencrypting.lock().remove(&zone.id);
        log::info!(
            "re-encrypted zone {}: {} changed, {} already current, {} failed, in {:.1} s",
            status.zone,
            status.files_done,
            status.files_current,
            status.files_failed,
            status.elapsed_ms as f64 / 1000.0
        );
    }

    /// Status of every zone (or of the zone rooted at `rel`), jobs or not.
    pub fn reencrypt_status(&self, rel: Option<&str>) -> Result<Vec<JobStatus>, String> {
        let only = match rel {
            Some(r) => {
                let dir = self.resolve(r)?;
                match self.zone_root_of(&dir) {
                    Some((root, Ok(m))) if root == dir => Some(m.id_hex()),
                    _ => return Err(format!("/{} is not a zone root", self.relative(&dir))),
                }
            }
            None => None,
        };
        // a running job is polled a few times a second: answer from memory
        if let Some(j) = only.as_ref().and_then(|id| self.jobs.get(id)) {
            return Ok(vec![j]);
        }
        let mut out = Vec::new();
        for z in self.zones_found(false) {
            if only.as_ref().is_some_and(|id| id != &z.zone_id) {
                continue;
            }
            let job = self.jobs.get(&z.zone_id);
            out.push(match job {
                Some(mut j) => {
                    j.zone = z.path.clone();
                    j
                }
                None => JobStatus {
                    zone: z.path.clone(),
                    zone_id: z.zone_id.clone(),
                    key: z.key.clone(),
                    target_version: z.key_version,
                    data: false,
                    state: JobState::None,
                    files_total: z.files,
                    files_done: 0,
                    files_current: 0,
                    files_failed: 0,
                    failures: Vec::new(),
                    started: 0,
                    finished: None,
                    elapsed_ms: 0,
                },
            });
        }
        Ok(out)
    }
}
