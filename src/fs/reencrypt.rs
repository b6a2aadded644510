//! Zone re-encryption jobs on a live mount (HDFS's `reencryptZone` and
//! `listReencryptionStatus`).
//!
//! A job walks one zone (nested zones keep their own keys) and brings every file to the
//! zone key's newest version, one crash-safe step per file (see `fs::rekey`). It runs
//! in a thread of the mount daemon, so the filesystem keeps serving, renames included:
//! a file renamed away from the walk is found again by the next walk or by the renames
//! noted meanwhile, and the job ends only once both find nothing left.
//!
//! The job acts as root in directories that users can write, so it never uses a path
//! outside the zone: the zone root is held open, every directory and file is reached
//! beneath that descriptor through no symlink and on no other filesystem
//! (`openat2`), temporary files are made in the directory descriptor the job opened,
//! and a file's current place is checked to be inside the zone before it is changed.
//!
//! A job can be cancelled (`zone reencrypt --cancel`) and is stopped at unmount; either
//! way it is recorded as resumable, and running it again finishes it in the same mode
//! (a `--data` job stays one: it is the after-a-compromise procedure). The status of
//! every job is kept in `BACKING/.ezfs/reencrypt.json`; a job that was running when the
//! daemon died shows as interrupted.

use super::core::Core;
use super::error::{FsError, FsResult};
use super::inode::{handle_at, Inode, ROOT};
use super::jobs::{JobState, JobStatus};
use super::names::shown;
use super::rekey::{JobError, Outcome, Target};
use crate::backdir::resolve::open_beneath;
use crate::backdir::sys;
use crate::backdir::walk::{walk, Kind, Visitor};
use crate::backdir::Caller;
use crate::text::{hex, unix_now};
use crate::zone::Zone;
use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Failures kept per job (the count is exact).
const MAX_FAILURES: usize = 100;
/// Walks of the zone before files still moving are reported as failures.
const MAX_ROUNDS: u32 = 5;
/// How often progress is synced to disk and recorded.
const CHECKPOINT: Duration = Duration::from_secs(1);
/// How long unmounting waits for running jobs to record where they stopped.
const STOP_WAIT: Duration = Duration::from_secs(20);

/// A job while it runs: the paths renamed in its zone since it last looked (a walk can
/// miss an entry that moves while it walks), and its stop flag.
#[derive(Default)]
pub struct RunningJob {
    /// A set: a name renamed over and over is noted (and later walked) once.
    renamed: std::collections::BTreeSet<PathBuf>,
    stop: Arc<AtomicBool>,
}

/// The running jobs, by zone id, and their threads.
#[derive(Default)]
pub struct Running {
    jobs: parking_lot::Mutex<std::collections::HashMap<[u8; 16], RunningJob>>,
    threads: parking_lot::Mutex<Vec<std::thread::JoinHandle<()>>>,
}

fn syncfs(dir: BorrowedFd<'_>) {
    if let Ok(d) = sys::open_at(dir, OsStr::new("."), libc::O_RDONLY | libc::O_DIRECTORY, 0) {
        // SAFETY: valid descriptor.
        unsafe { libc::syncfs(d.as_raw_fd()) };
    }
}

/// The zone root of a running job, open: everything the job touches is reached beneath
/// it, wherever renames take it.
pub(super) struct Root {
    pub fd: OwnedFd,
    /// (st_dev, st_ino) of the root directory.
    pub key: (u64, u64),
}

impl Root {
    /// The root's path now (from its `/proc` link), if it is still a directory there.
    pub fn path(&self) -> Option<PathBuf> {
        let p = sys::path_of(self.fd.as_fd()).ok()?;
        let st = sys::stat_at(sys::at_cwd(), p.as_os_str()).ok()?;
        ((st.st_dev, st.st_ino) == self.key).then_some(p)
    }

    /// Opens `rel` beneath the root: no `..` out, no symlink, no other filesystem.
    pub fn open(&self, rel: &Path, flags: i32) -> std::io::Result<OwnedFd> {
        open_beneath(self.fd.as_fd(), rel, flags, true)
    }
}

/// Collects the regular files of a job's zone below one directory (nested zones left
/// out), removing the leftover temporary files of an interrupted `--data` run.
struct JobWalk<'a> {
    core: &'a Core,
    /// The walk starts at the backing root (a zone there).
    at_backing_root: bool,
    /// The walk's start, from the zone root.
    base: PathBuf,
    /// Hard links are one file.
    inodes: HashSet<(u64, u64)>,
    files: Vec<Target>,
}

impl Visitor for JobWalk<'_> {
    type Ctx = ();
    fn enter(&mut self, dir: BorrowedFd<'_>, rel: &Path, parent: Option<&()>) -> Option<()> {
        if parent.is_none() {
            return Some(());
        }
        // a zone at the backing root: .ezfs is never part of it
        if self.at_backing_root && self.base.join(rel) == Path::new(crate::EZFS_DIR) {
            return None;
        }
        let nested = crate::zone::walk::has_marker(dir)
            || sys::stat_at(dir, OsStr::new(""))
                .is_ok_and(|st| self.core.is_zone_root((st.st_dev, st.st_ino)));
        (!nested || rel.as_os_str().is_empty()).then_some(())
    }
    fn entry(&mut self, dir: BorrowedFd<'_>, name: &OsStr, rel: &Path, kind: Kind, _: u64, _: &()) {
        let b = name.as_encoded_bytes();
        if kind != Kind::File || crate::zone::is_housekeeping(b) || crate::backdir::resolve::is_temp(b) {
            return;
        }
        let Ok(st) = sys::stat_at(dir, name) else { return };
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return;
        }
        if crate::zone::is_rekey_temp(b) {
            let _ = sys::unlink_at(dir, name, 0);
            return;
        }
        let id = (st.st_dev, st.st_ino);
        if self.inodes.insert(id) {
            self.files.push(Target {
                rel: self.base.join(rel),
                handle: handle_at(dir, name),
                id,
            });
        }
    }
}

impl Core {
    /// Starts re-encrypting the zone whose root is `rel`; returns its first status.
    /// `caller` must be root or own the zone root. An interrupted or cancelled job of
    /// the zone is resumed in its own mode: a `--data` job stays one.
    pub fn reencrypt_start(self: &Arc<Core>, rel: &str, data: bool, caller: &Caller) -> FsResult<JobStatus> {
        if self.read_only {
            return Err(FsError::ReadOnly);
        }
        let (fd, rel) = self.resolve_as(caller, rel)?;
        let shown = shown(&rel);
        let st = sys::stat_at(fd.as_fd(), OsStr::new("")).map_err(FsError::at(&shown))?;
        if !caller.is_root() && st.st_uid != caller.uid {
            return Err(FsError::NotOwner {
                path: shown,
                what: "re-encrypt the zone",
            });
        }
        let key = (st.st_dev, st.st_ino);
        let zone = match self
            .is_zone_root(key)
            .then(|| self.dir_zone(fd.as_fd(), key))
            .flatten()
        {
            Some(z) => match &z.broken {
                None => (*z).clone(),
                Some(why) => {
                    return Err(FsError::BrokenZone {
                        at: shown,
                        why: why.clone(),
                    })
                }
            },
            None => return Err(FsError::NotZoneRoot(shown)),
        };
        let root = Root {
            fd: sys::open_at(fd.as_fd(), OsStr::new("."), libc::O_PATH | libc::O_DIRECTORY, 0)
                .map_err(FsError::at(&shown))?,
            key,
        };
        let _ = self.keys.reload();
        let version = self.keys.current_version(&zone.key)?;
        let previous = self.jobs.get(&hex(&zone.id));
        // a --data job stopped half way resumes as one, whatever this run asked
        let data = data || previous.as_ref().is_some_and(|j| j.state.resumable() && j.data);
        let status = JobStatus {
            zone: shown.clone(),
            zone_id: hex(&zone.id),
            key: zone.key.clone(),
            target_version: version,
            data,
            state: JobState::Running,
            files_total: 0,
            files_done: 0,
            files_current: 0,
            files_failed: 0,
            failures: Vec::new(),
            started: unix_now(),
            finished: None,
            elapsed_ms: 0,
        };
        let stop = {
            let mut running = self.running.jobs.lock();
            if running.contains_key(&zone.id) {
                return Err(FsError::JobRunning(shown));
            }
            let job = running.entry(zone.id).or_default();
            job.stop.clone()
        };
        // shared storage: one job per zone across all hosts
        let claim = match self.jobs.claim(&hex(&zone.id)) {
            Ok(Some(lock)) => lock,
            Ok(None) => {
                self.running.jobs.lock().remove(&zone.id);
                return Err(FsError::JobRunning(format!("{shown} (on another host)")));
            }
            Err(e) => {
                self.running.jobs.lock().remove(&zone.id);
                return Err(FsError::CannotStart(e));
            }
        };
        self.jobs.set(&status);
        let core = self.clone();
        let first = status.clone();
        let id = zone.id;
        // the walk of a large zone takes seconds: the job does it, the caller polls
        let spawned = std::thread::Builder::new()
            .name("ezfs-reencrypt".into())
            .spawn(move || {
                core.run_job(root, zone, status, stop);
                drop(claim);
            });
        match spawned {
            Ok(t) => self.running.threads.lock().push(t),
            Err(e) => {
                self.running.jobs.lock().remove(&id);
                return Err(FsError::CannotStart(e));
            }
        }
        Ok(first)
    }

    /// Stops the running job of the zone rooted at `rel`; it is recorded as cancelled
    /// (resumable). `caller` must be root or own the zone root.
    pub fn reencrypt_cancel(&self, rel: &str, caller: &Caller) -> FsResult<JobStatus> {
        let (fd, rel) = self.resolve_as(caller, rel)?;
        let shown = shown(&rel);
        let st = sys::stat_at(fd.as_fd(), OsStr::new("")).map_err(FsError::at(&shown))?;
        if !caller.is_root() && st.st_uid != caller.uid {
            return Err(FsError::NotOwner {
                path: shown,
                what: "cancel its job",
            });
        }
        let key = (st.st_dev, st.st_ino);
        let Some(zone) = self.dir_zone(fd.as_fd(), key).filter(|_| self.is_zone_root(key)) else {
            return Err(FsError::NotZoneRoot(shown));
        };
        let stop = self.running.jobs.lock().get(&zone.id).map(|j| j.stop.clone());
        let Some(stop) = stop else {
            return Err(FsError::NoJobRunning(shown));
        };
        stop.store(true, Ordering::Release);
        let id = hex(&zone.id);
        // the job records its state within a file's step
        let deadline = Instant::now() + STOP_WAIT;
        while self.running.jobs.lock().contains_key(&zone.id) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.jobs.get(&id).ok_or(FsError::NoJobRecord(shown))
    }

    /// Stops every running job (the mount is going away) and waits for each to record
    /// itself as interrupted.
    pub fn stop_jobs(&self) {
        self.unmounting.store(true, Ordering::Release);
        for j in self.running.jobs.lock().values() {
            j.stop.store(true, Ordering::Release);
        }
        let threads = std::mem::take(&mut *self.running.threads.lock());
        let deadline = Instant::now() + STOP_WAIT;
        for t in threads {
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }

    /// Tells a running job of `dir`'s zone that `dir/name` was just renamed there.
    pub(super) fn note_renamed(&self, dir: &Inode, name: &OsStr) {
        let mut running = self.running.jobs.lock();
        if running.is_empty() {
            return;
        }
        let Some(job) = dir.zone_id().and_then(|z| running.get_mut(&z)) else {
            return;
        };
        // a directory's descriptor always names a connected path
        if let Ok(fd) = dir.fd() {
            if let Ok(p) = sys::path_of(fd.as_fd()) {
                job.renamed.insert(p.join(name));
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
            .running
            .jobs
            .lock()
            .get_mut(&id)
            .map(|j| std::mem::take(&mut j.renamed))
            .unwrap_or_default();
        // the root cannot move while the gate is held
        let Some(now) = root.path() else {
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
            let Ok(fd) = root.open(rel, libc::O_PATH | libc::O_NOFOLLOW) else {
                // deleted, or renamed again: then that later rename is noted too
                continue;
            };
            let Ok(st) = sys::stat_at(fd.as_fd(), OsStr::new("")) else {
                continue;
            };
            match st.st_mode & libc::S_IFMT {
                // a renamed directory is walked here too: a file leaving it while we
                // walked it unlocked would be missed
                libc::S_IFDIR => out.extend(self.job_files(&fd, rel)),
                libc::S_IFREG => out.push(Target {
                    handle: handle_at(fd.as_fd(), OsStr::new("")),
                    rel: rel.to_path_buf(),
                    id: (st.st_dev, st.st_ino),
                }),
                _ => {}
            }
        }
        (out, lost)
    }

    /// Regular files below directory `dir` (at `base` from the zone root), nested zones
    /// excluded; leftover temporary files of an interrupted `--data` run are removed.
    fn job_files(&self, dir: &OwnedFd, base: &Path) -> Vec<Target> {
        let at_backing_root = base.as_os_str().is_empty()
            && sys::stat_at(dir.as_fd(), OsStr::new("")).is_ok_and(|st| {
                self.inodes
                    .get(ROOT)
                    .is_some_and(|r| r.key == (st.st_dev, st.st_ino))
            });
        let mut v = JobWalk {
            core: self,
            at_backing_root,
            base: base.to_path_buf(),
            inodes: HashSet::new(),
            files: Vec::new(),
        };
        walk(dir.as_fd(), &mut v);
        v.files
    }

    /// The zone root's path from the mount root, for status and messages.
    fn shown_root(&self, root: &Root, fallback: &str) -> String {
        root.path()
            .map(|p| shown(&self.mount_rel(Path::new(&self.relative(&p)))))
            .unwrap_or_else(|| fallback.to_owned())
    }

    fn run_job(self: Arc<Core>, root: Root, zone: Zone, mut status: JobStatus, stop: Arc<AtomicBool>) {
        let t0 = Instant::now();
        let files = self.job_files(&root.fd, Path::new(""));
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
        // names in a name-encrypted zone are shown as the mount shows them
        let root_backing = zone
            .names
            .as_ref()
            .and_then(|_| root.path())
            .map(|p| PathBuf::from(self.relative(&p)));
        let fail = |status: &mut JobStatus, rel: &Path, e: &str| {
            let shown = match &root_backing {
                Some(r) => shown(&self.mount_rel(&r.join(rel))),
                None => format!("{}/{}", status.zone.trim_end_matches('/'), rel.display()),
            };
            log::error!("re-encrypting {shown}: {e}");
            status.files_failed += 1;
            if status.failures.len() < MAX_FAILURES {
                status.failures.push(format!("{shown}: {e}"));
            }
        };
        let mut end = JobState::Completed;
        if let Err(e) = self.names_job_start(&zone, status.target_version, status.data) {
            fail(&mut status, Path::new(""), &job_error_text(&e));
            end = JobState::Interrupted;
        }
        // files handled, by backing inode, so that a second walk counts nothing twice
        let mut seen: HashSet<(u64, u64)> = HashSet::new();
        let mut retry: Vec<Target> = Vec::new();
        let mut pass = files;
        let mut round = 0;
        'rounds: loop {
            if end != JobState::Completed {
                break;
            }
            round += 1;
            let last_round = round >= MAX_ROUNDS;
            for target in pass.drain(..) {
                if stop.load(Ordering::Acquire) {
                    end = JobState::Interrupted;
                    break 'rounds;
                }
                let step = self.rekey(
                    &root,
                    &target,
                    &zone,
                    status.target_version,
                    status.data,
                    last_round,
                    &mut seen,
                    &stop,
                );
                match step {
                    Ok(Outcome::Done) => status.files_done += 1,
                    Ok(Outcome::Current | Outcome::Empty) => status.files_current += 1,
                    // deleted, or renamed under our feet: the next walk finds it
                    Ok(Outcome::Gone | Outcome::Seen) => continue,
                    Err(JobError::Busy) if !last_round => {
                        retry.push(target);
                        continue;
                    }
                    Err(JobError::Busy) => fail(&mut status, &target.rel, "busy: open in the mount"),
                    Err(JobError::Stopped) => {
                        end = JobState::Interrupted;
                        break 'rounds;
                    }
                    Err(JobError::Fatal(e)) => {
                        fail(&mut status, &target.rel, &e);
                        log::error!("re-encryption of zone {} stopped: {e}", status.zone);
                        end = JobState::Interrupted;
                        break 'rounds;
                    }
                    Err(JobError::Failed(e)) => fail(&mut status, &target.rel, &e),
                }
                if last.elapsed() >= CHECKPOINT {
                    syncfs(root.fd.as_fd());
                    status.zone = self.shown_root(&root, &status.zone);
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
            let walked = self.job_files(&root.fd, Path::new(""));
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
                let moving: Vec<PathBuf> = again.iter().chain(&retry).map(|t| t.rel.clone()).collect();
                for rel in moving {
                    fail(&mut status, &rel, "kept moving during the job; run it again");
                }
                if lost {
                    fail(
                        &mut status,
                        Path::new(""),
                        "kept moving during the job; run it again",
                    );
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
        if end == JobState::Completed && status.data && zone.names.is_some() {
            match self.names_job_finish(&root, &zone, &stop) {
                Ok(n) => log::info!(
                    "zone {}: {n} file name(s) moved to the new name secret",
                    status.zone
                ),
                Err(e) => {
                    if !matches!(e, JobError::Stopped) {
                        fail(&mut status, Path::new(""), &job_error_text(&e));
                    }
                    end = JobState::Interrupted;
                }
            }
        }
        syncfs(root.fd.as_fd());
        if end == JobState::Interrupted
            && stop.load(Ordering::Acquire)
            && !self.unmounting.load(Ordering::Acquire)
        {
            end = JobState::Cancelled;
        }
        status.zone = self.shown_root(&root, &status.zone);
        status.state = end;
        status.finished = Some(unix_now());
        status.elapsed_ms = t0.elapsed().as_millis() as u64;
        self.jobs.set(&status);
        self.running.jobs.lock().remove(&zone.id);
        log::info!(
            "re-encryption of zone {} {}: {} changed, {} already current, {} failed, in {:.1} s",
            status.zone,
            match end {
                JobState::Completed => "completed",
                JobState::Cancelled => "cancelled (run it again to finish)",
                _ => "interrupted (run it again to finish)",
            },
            status.files_done,
            status.files_current,
            status.files_failed,
            status.elapsed_ms as f64 / 1000.0
        );
    }

    /// Status of every zone the caller can reach (or of the zone rooted at `rel`), jobs
    /// or not.
    pub fn reencrypt_status(&self, rel: Option<&str>, caller: &Caller) -> FsResult<Vec<JobStatus>> {
        let only = match rel {
            Some(r) => {
                let (fd, rel) = self.resolve_as(caller, r)?;
                let key = super::zones::dev_ino(fd.as_fd())?;
                match self.dir_zone(fd.as_fd(), key).filter(|_| self.is_zone_root(key)) {
                    Some(z) => Some(hex(&z.id)),
                    None => return Err(FsError::NotZoneRoot(shown(&rel))),
                }
            }
            None => None,
        };
        // a running job is polled a few times a second: answer from memory
        if let Some(j) = only.as_ref().and_then(|id| self.jobs.get(id)) {
            return Ok(vec![j]);
        }
        let mut out = Vec::new();
        for z in self.zones_visible(caller, false) {
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

    /// The record of the job of zone `zone_id`, if the caller can reach the zone.
    pub fn reencrypt_job(&self, zone_id: &str, caller: &Caller) -> FsResult<JobStatus> {
        let none = || FsError::NoJobRecord(format!("zone {zone_id}"));
        let mut path = None;
        {
            // no rename between its backing rename and the registry's note of it: the
            // registered path leads to the root even while the root keeps moving
            let _renames = self.rename_gate.write();
            self.keys
                .with_registry(&mut |r| path = r.get(zone_id).map(|z| z.path.clone()));
            self.resolve_backing_as(caller, &path.ok_or_else(none)?)?;
        }
        self.jobs.get(zone_id).ok_or_else(none)
    }
}

/// What a job error says in a job's failures.
fn job_error_text(e: &JobError) -> String {
    match e {
        JobError::Busy => "busy: open in the mount".into(),
        JobError::Stopped => "stopped".into(),
        JobError::Failed(s) | JobError::Fatal(s) => format!("file names: {s}"),
    }
}
