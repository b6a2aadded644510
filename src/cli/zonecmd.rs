//! `ezfs zone …`: requests to the mount that holds the given path.

use super::{mountinfo, CliResult, Failure};
use crate::control::{self, Request};
use crate::fs::jobs::{JobState, JobStatus};
use crate::fs::zonereq::{FileUse, PathInfo, ZoneSummary};
use clap::Subcommand;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Subcommand, Debug)]
pub enum ZoneCmd {
    /// Make an existing empty directory in a mount an encryption zone.
    Create {
        /// The zone key's name.
        #[arg(long, value_name = "NAME")]
        key: String,
        /// Encrypt file names and symlink targets too (in the backing dir, names are
        /// AES-SIV ciphertext); the default keeps names plain, as HDFS does.
        #[arg(long)]
        encrypt_names: bool,
        dir: PathBuf,
    },
    /// List every zone of a mount: path, key, file count.
    List {
        mountpoint: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show how a file or directory is encrypted: zone, key@version, cipher suite, EDEK, file id.
    Info {
        path: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Re-wrap every file's data key in zone DIR with the zone key's newest version
    /// (data untouched), or with --status show each zone's re-encryption state.
    Reencrypt {
        /// The zone root (with --status: optional, default every zone of the current mount).
        #[arg(required_unless_present = "status")]
        dir: Option<PathBuf>,
        /// Also give every file a new data key and re-encrypt its blocks.
        #[arg(long, conflicts_with = "status")]
        data: bool,
        /// Show the state of re-encryption jobs instead of starting one.
        #[arg(long, conflicts_with = "cancel")]
        status: bool,
        /// Stop the running job of zone DIR; running the command again resumes it.
        #[arg(long, conflicts_with = "data")]
        cancel: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the files of zone DIR with the key version each uses (those on --version N).
    Files {
        dir: PathBuf,
        /// Only the files whose data key is wrapped with this version.
        #[arg(long, value_name = "N")]
        version: Option<u32>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write the marker of a registered zone again (it was lost or damaged), or with
    /// --id put a zone back at ZONE after it was moved without its marker. ZONE is the
    /// zone root's path from the mount root (as 'zone list' and fsck show it).
    Repair {
        zone: String,
        /// The zone's id (hex, from fsck or the mount's error); default: the zone
        /// registered at ZONE.
        #[arg(long, value_name = "ID")]
        id: Option<String>,
        #[command(flatten)]
        at: super::backing::BackingArg,
        #[command(flatten)]
        pass: super::PassArgs,
    },
    /// Remove a zone whose directory is gone from the keystore's registry (so that its
    /// key can be deleted and the backing dir mounts again).
    Forget {
        /// The zone's id (hex, from the mount's error or fsck).
        id: String,
        #[command(flatten)]
        at: super::backing::BackingArg,
        #[command(flatten)]
        pass: super::PassArgs,
    },
}

/// The mount holding `path` and `path` relative to its root.
fn locate(path: &Path) -> Result<(mountinfo::EzMount, String), Failure> {
    let canon = path.canonicalize().map_err(|e| {
        let dead = std::path::absolute(path)
            .ok()
            .and_then(|p| mountinfo::dead_mount_of(&p));
        match dead {
            Some(m) => Failure::op(mountinfo::dead_message(&m)),
            None => Failure::op(format!("{}: {}", path.display(), crate::text::io_words(&e))),
        }
    })?;
    let m = mountinfo::mount_of(&canon)
        .ok_or_else(|| Failure::op(format!("{} is not inside an ezfs mount", path.display())))?;
    let rel = canon
        .strip_prefix(&m.mountpoint)
        .unwrap_or(Path::new(""))
        .to_string_lossy()
        .into_owned();
    Ok((m, rel))
}

fn shown(m: &mountinfo::EzMount, rel: &str) -> String {
    m.mountpoint
        .join(rel.trim_start_matches('/'))
        .display()
        .to_string()
}

pub fn run(cmd: ZoneCmd) -> CliResult {
    match cmd {
        ZoneCmd::Repair { zone, id, at, pass } => super::zonefix::repair(&zone, id.as_deref(), &at, &pass)?,
        ZoneCmd::Forget { id, at, pass } => super::zonefix::forget(&id, &at, &pass)?,
        ZoneCmd::Files { dir, version, json } => {
            let (m, rel) = locate(&dir)?;
            let v = control::call_mount(
                &m.backing,
                &m.mountpoint,
                &Request::ZoneFiles { path: rel, version },
            )?;
            let mut files: Vec<FileUse> = serde_json::from_value(v).map_err(Failure::op)?;
            for f in &mut files {
                f.path = shown(&m, &f.path);
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&files).expect("serializes"));
            } else {
                for f in &files {
                    match f.key_version {
                        0 => println!("(empty)  {}", f.path),
                        v => println!("{}@{v}  {}", f.key, f.path),
                    }
                }
            }
        }
        ZoneCmd::Reencrypt {
            dir: Some(dir),
            cancel: true,
            json,
            ..
        } => {
            let (m, rel) = locate(&dir)?;
            let v = control::call_mount(&m.backing, &m.mountpoint, &Request::ReencryptCancel { path: rel })?;
            let mut job: JobStatus = serde_json::from_value(v).map_err(Failure::op)?;
            job.zone = shown(&m, &job.zone);
            if json {
                println!("{}", serde_json::to_string_pretty(&job).expect("serializes"));
            } else {
                println!(
                    "cancelled the re-encryption of {} after {} of {} file(s); run 'ezfs zone reencrypt{} {}' to finish it",
                    job.zone,
                    job.files_seen(),
                    job.files_total,
                    if job.data { " --data" } else { "" },
                    job.zone
                );
            }
        }
        ZoneCmd::Create {
            key,
            encrypt_names,
            dir,
        } => {
            let (m, rel) = locate(&dir)?;
            let v = control::call_mount(
                &m.backing,
                &m.mountpoint,
                &Request::ZoneCreate {
                    path: rel,
                    key,
                    encrypt_names,
                },
            )?;
            let z: ZoneSummary = serde_json::from_value(v).map_err(Failure::op)?;
            println!(
                "created encryption zone {} with key {}@{}{}",
                shown(&m, &z.path),
                z.key,
                z.key_version,
                if z.encrypt_names {
                    ", file names encrypted"
                } else {
                    ""
                }
            );
        }
        ZoneCmd::List { mountpoint, json } => {
            let (m, _) = locate(&mountpoint)?;
            let v = control::call_mount(&m.backing, &m.mountpoint, &Request::ZoneList)?;
            let mut zones: Vec<ZoneSummary> = serde_json::from_value(v).map_err(Failure::op)?;
            for z in &mut zones {
                z.path = shown(&m, &z.path);
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&zones).expect("serializes"));
            } else if zones.is_empty() {
                println!("no encryption zones");
            } else {
                let rows: Vec<Vec<String>> = zones
                    .iter()
                    .map(|z| {
                        let per: Vec<String> = z
                            .files_by_version
                            .iter()
                            .map(|(kv, n)| format!("{kv}:{n}"))
                            .collect();
                        let by = match &z.broken {
                            Some(why) => format!("BROKEN: {why}"),
                            None if per.is_empty() => "-".to_string(),
                            None => per.join(" "),
                        };
                        vec![
                            z.path.clone(),
                            format!("{}@{}", z.key, z.key_version),
                            if z.encrypt_names { "encrypted" } else { "plain" }.into(),
                            z.files.to_string(),
                            by,
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    crate::text::table(
                        &["ZONE", "KEY", "NAMES", "FILES", "BY VERSION"],
                        &rows,
                        &[false, false, false, true, false]
                    )
                );
            }
        }
        ZoneCmd::Info { path, json } => {
            let (m, rel) = locate(&path)?;
            let v = control::call_mount(&m.backing, &m.mountpoint, &Request::ZoneInfo { path: rel })?;
            let mut i: PathInfo = serde_json::from_value(v).map_err(Failure::op)?;
            i.path = shown(&m, &i.path);
            i.zone = shown(&m, &i.zone);
            if json {
                println!("{}", serde_json::to_string_pretty(&i).expect("serializes"));
            } else {
                println!("path:         {}", i.path);
                println!("zone:         {} (id {})", i.zone, i.zone_id);
                println!("key:          {}@{}", i.key, i.key_version);
                println!("cipher suite: {}", i.cipher_suite);
                println!(
                    "file names:   {}",
                    if i.encrypt_names {
                        "encrypted (AES-SIV)"
                    } else {
                        "plain"
                    }
                );
                if let (Some(edek), Some(id)) = (&i.edek, &i.file_id) {
                    println!("file id:      {id}");
                    println!("EDEK:         {edek}");
                }
                if !i.files_by_version.is_empty() {
                    let per: Vec<String> = i
                        .files_by_version
                        .iter()
                        .map(|(kv, n)| format!("{n} on {kv}"))
                        .collect();
                    println!("files:        {}", per.join(", "));
                }
            }
        }
        ZoneCmd::Reencrypt {
            dir,
            data,
            status: true,
            json,
            ..
        } => {
            let _ = data;
            let (m, rel) = match &dir {
                Some(d) => {
                    let (m, rel) = locate(d)?;
                    (m, Some(rel))
                }
                None => {
                    let cwd = std::env::current_dir().map_err(Failure::op)?;
                    // with no DIR, the mount comes from the current directory, as for
                    // the key commands: outside one it is a usage error
                    let (m, _) = locate(&cwd).map_err(|f| {
                        Failure::usage(format!(
                            "{}; give DIR, or run it inside an ezfs mount",
                            f.msg.trim_end_matches('.')
                        ))
                    })?;
                    (m, None)
                }
            };
            let v = control::call_mount(&m.backing, &m.mountpoint, &Request::ReencryptStatus { path: rel })?;
            let mut jobs: Vec<JobStatus> = serde_json::from_value(v).map_err(Failure::op)?;
            for j in &mut jobs {
                j.zone = shown(&m, &j.zone);
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&jobs).expect("serializes"));
            } else {
                print_status_table(&jobs);
            }
        }
        ZoneCmd::Reencrypt { dir, data, json, .. } => {
            let dir = dir.ok_or_else(|| Failure::usage("give the zone directory"))?;
            let (m, rel) = locate(&dir)?;
            let v = control::call_mount(
                &m.backing,
                &m.mountpoint,
                &Request::ReencryptStart {
                    path: rel.clone(),
                    data,
                },
            )?;
            let mut job: JobStatus = serde_json::from_value(v).map_err(Failure::op)?;
            if job.data && !data {
                eprintln!(
                    "ezfs: resuming the interrupted 'zone reencrypt --data' job of {}: every file gets a new data key",
                    shown(&m, &job.zone)
                );
            }
            let tty = std::io::stderr().is_terminal();
            if tty {
                eprintln!("re-encrypting in the mount daemon (Ctrl-C stops only this display)");
            }
            while job.state == JobState::Running {
                if tty {
                    eprint!("\r{}", progress_line(&job));
                }
                std::thread::sleep(Duration::from_millis(250));
                job = poll_job(&m.backing, &m.mountpoint, &job.zone_id, &rel)?;
            }
            if tty {
                eprintln!("\r{}", progress_line(&job));
            }
            job.zone = shown(&m, &job.zone);
            if json {
                println!("{}", serde_json::to_string_pretty(&job).expect("serializes"));
            } else {
                println!(
                    "zone {}: {} file(s) {} to {}@{}, {} already current, {} failed ({:.1} s)",
                    job.zone,
                    job.files_done,
                    if job.data { "re-encrypted" } else { "re-wrapped" },
                    job.key,
                    job.target_version,
                    job.files_current,
                    job.files_failed,
                    job.elapsed_ms as f64 / 1000.0
                );
                if job.data && job.files_done == 0 && job.files_failed == 0 {
                    println!(
                        "every file already uses {}@{}: roll the key first ('ezfs key roll {}') to replace data keys",
                        job.key, job.target_version, job.key
                    );
                }
            }
            if job.state != JobState::Completed || job.files_failed > 0 {
                for f in &job.failures {
                    eprintln!("ezfs: {f}");
                }
                return Err(Failure::op(format!(
                    "{} file(s) in {} could not be re-encrypted; run the command again once fixed",
                    job.files_failed, job.zone
                )));
            }
        }
    }
    Ok(())
}

/// The status of the running job on zone `zone_id`, asked by zone id, since the root
/// may be renamed while the job runs; by the root's path `rel` from a daemon older
/// than that request.
fn poll_job(backing: &Path, mountpoint: &Path, zone_id: &str, rel: &str) -> Result<JobStatus, Failure> {
    let by_id = Request::ReencryptJob {
        zone_id: zone_id.to_owned(),
    };
    if let Ok(v) = control::call_mount(backing, mountpoint, &by_id) {
        return serde_json::from_value(v).map_err(Failure::op);
    }
    let by_path = Request::ReencryptStatus {
        path: Some(rel.to_owned()),
    };
    let jobs: Vec<JobStatus> =
        serde_json::from_value(control::call_mount(backing, mountpoint, &by_path)?).map_err(Failure::op)?;
    jobs.into_iter()
        .next()
        .ok_or_else(|| Failure::op("the zone disappeared during re-encryption"))
}

fn progress_line(j: &JobStatus) -> String {
    let seen = j.files_seen();
    if j.state == JobState::Running && j.files_total == 0 && seen == 0 {
        return "  walking the zone...".into();
    }
    let pct = if j.files_total == 0 {
        100.0
    } else {
        100.0 * seen.min(j.files_total) as f64 / j.files_total as f64
    };
    let rate = if j.elapsed_ms > 0 {
        seen as f64 * 1000.0 / j.elapsed_ms as f64
    } else {
        0.0
    };
    format!(
        "  {seen}/{} files ({pct:.0}%), {rate:.0} files/s, {} failed ",
        j.files_total, j.files_failed
    )
}

fn print_status_table(jobs: &[JobStatus]) {
    if jobs.is_empty() {
        println!("no encryption zones");
        return;
    }
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            vec![
                j.zone.clone(),
                j.state_name(),
                format!("{}@{}", j.key, j.target_version),
                j.files_total.to_string(),
                j.files_done.to_string(),
                j.files_current.to_string(),
                j.files_failed.to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        crate::text::table(
            &["ZONE", "STATE", "KEY", "TOTAL", "DONE", "CURRENT", "FAILED"],
            &rows,
            &[false, false, false, true, true, true, true]
        )
    );
    for j in jobs.iter().filter(|j| j.state.resumable()) {
        println!(
            "{}: run 'ezfs zone reencrypt{} {}' to finish the {} job",
            j.zone,
            if j.data { " --data" } else { "" },
            j.zone,
            j.state_name()
        );
    }
}
