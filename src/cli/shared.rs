//! Shared storage at mount time: whether the backing dir is served by several
//! daemons (hosts) at once, and the lock that keeps a daemon of its own from running
//! beside daemons that share it.
//!
//! `.ezfs/shared-storage` records that the backing dir is shared: once one host
//! mounted it with `--shared-storage`, every mount of it is a shared one. Each daemon
//! holds a lock on byte 0 of `.ezfs/mount.lock` for its whole life: shared by a
//! shared-storage daemon, exclusive by any other. A mount that cannot get its lock is
//! refused, wherever the other daemon runs, as long as the file system carries byte-
//! range locks between hosts (the ones shared storage needs anyway): a second mount
//! of its own, or a mix of the two kinds, never writes beside another daemon.

use super::{CliResult, Failure};
use crate::backdir::ofd::{self, Kind};
use crate::keys::keystore::ezfs_dir;
use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;

/// The file whose presence makes every mount of the backing dir a shared one.
const SETTING: &str = "shared-storage";
/// The file the daemons' lock is on.
const LOCK: &str = "mount.lock";

/// Whether the backing dir is recorded as shared.
pub(super) fn recorded(backing: &Path) -> bool {
    crate::keys::atomic::read_file(&ezfs_dir(backing).join(SETTING), 4096).is_ok()
}

/// Records that the backing dir is shared.
pub(super) fn record(backing: &Path) -> CliResult {
    let note = b"Mounts of this backing dir share it with other hosts (ezfs mount --shared-storage).\n";
    crate::keys::atomic::write_file(&ezfs_dir(backing).join(SETTING), note, 0o644).map_err(|e| {
        Failure::op(format!(
            "cannot record {} as shared storage: {e}",
            backing.display()
        ))
    })
}

/// Takes the daemon's lock (see the module's doc), kept for the life of the process
/// (the returned file must stay open: closing it releases the lock). A daemon of its
/// own on a file system without byte-range locks goes on without it, with a warning.
pub(super) fn lock_mount(backing: &Path, shared: bool) -> Result<Option<File>, Failure> {
    let path = ezfs_dir(backing).join(LOCK);
    let f = match crate::keys::atomic::open_lock_file(&path) {
        Ok(f) => f,
        Err(e) if shared => return Err(Failure::op(format!("cannot open {}: {e}", path.display()))),
        Err(e) => {
            // a read-only backing dir, for one
            log::warn!(
                "cannot open {} ({e}): a second daemon on this backing dir would not be noticed",
                path.display()
            );
            return Ok(None);
        }
    };
    let kind = if shared { Kind::Read } else { Kind::Write };
    match ofd::set(f.as_fd(), kind, 0, 1, false) {
        Ok(true) => Ok(Some(f)),
        Ok(false) if shared => Err(Failure::op(format!(
            "{} is mounted by an ezfs daemon that does not share it (here or on another host); \
             unmount it, then mount every host with --shared-storage",
            backing.display()
        ))),
        Ok(false) => Err(Failure::op(format!(
            "{} is already served by another ezfs daemon (here or on another host); two daemons \
             may serve one backing dir only with --shared-storage on every host",
            backing.display()
        ))),
        Err(e) if shared => Err(Failure::op(format!(
            "cannot lock {} ({e}): shared storage needs a file system with byte-range locks \
             between hosts",
            path.display()
        ))),
        Err(e) => {
            log::warn!(
                "cannot lock {} ({e}): a second daemon on this backing dir would not be noticed",
                path.display()
            );
            Ok(None)
        }
    }
}

/// GlusterFS client-side caches that keep one client from seeing another's writes
/// (or reorder writes against the locks that order them): shared storage needs them
/// off (`gluster volume set VOL OPTION off`).
pub(super) const GLUSTER_CACHES: &[&str] = &[
    "performance.write-behind",
    "performance.quick-read",
    "performance.open-behind",
    "performance.stat-prefetch",
    "performance.io-cache",
    "performance.read-ahead",
    "performance.readdir-ahead",
];

/// GlusterFS client (mount) options that keep a client from trusting its cached
/// names and attributes: without them a file another host created or removed is
/// missed (SQLite then cannot open its journal).
pub(super) const GLUSTER_MOUNT_OPTIONS: &[&str] =
    &["entry-timeout=0", "attribute-timeout=0", "negative-timeout=0"];

/// The mount point, file system type and source of the mount holding `path`
/// (canonical).
fn mount_of(path: &Path) -> Option<(std::path::PathBuf, String, String)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    super::mountinfo::parse(&text)
        .into_iter()
        .filter(|(mp, ..)| path.starts_with(mp))
        .max_by_key(|(mp, ..)| mp.as_os_str().len())
        .map(|(mp, fstype, source, _)| (mp, fstype, source))
}

/// The command line of the GlusterFS client process serving mount point `mp`.
fn gluster_client_args(mp: &Path) -> Option<Vec<String>> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let raw = std::fs::read(e.path().join("cmdline")).ok()?;
        let args: Vec<String> = raw
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let client = args.first()?.ends_with("glusterfs") && args.last()? == mp.to_str()?;
        client.then_some(args)
    })
}

/// Warns about what the mount can tell is wrong with the backing dir's file system
/// for shared storage: a GlusterFS volume with client caches on (asked of `gluster`
/// where it runs; otherwise the options to check are named).
pub(super) fn warn_about(backing: &Path) {
    let Some((mp, fstype, source)) = mount_of(backing) else {
        return;
    };
    if fstype != "fuse.glusterfs" {
        return;
    }
    if let Some(args) = gluster_client_args(&mp) {
        let missing: Vec<&str> = GLUSTER_MOUNT_OPTIONS
            .iter()
            .filter(|o| !args.iter().any(|a| a == &format!("--{o}")))
            .copied()
            .collect();
        if !missing.is_empty() {
            log::warn!(
                "GlusterFS is mounted at {} without {}: this host may miss files other hosts \
                 create or remove; mount it with -o {}",
                mp.display(),
                missing.join(","),
                GLUSTER_MOUNT_OPTIONS.join(",")
            );
        }
    }
    let volume = source
        .rsplit_once(':')
        .map_or(source.as_str(), |(_, v)| v)
        .trim_start_matches('/');
    let mut on = Vec::new();
    for opt in GLUSTER_CACHES {
        match gluster_option(volume, opt) {
            Some(v) if v == "off" || v == "false" || v == "disable" => {}
            Some(_) => on.push(*opt),
            None => {
                log::warn!(
                    "{} is on GlusterFS volume {volume}: shared storage needs its client caches off \
                     ({}); see ezfs(1)",
                    backing.display(),
                    GLUSTER_CACHES.join(", ")
                );
                return;
            }
        }
    }
    if !on.is_empty() {
        log::warn!(
            "GlusterFS volume {volume} has client caches on ({}): other hosts' writes may be missed \
             or reordered; turn them off with 'gluster volume set {volume} OPTION off'",
            on.join(", ")
        );
    }
}

/// The value of `option` of Gluster volume `volume`, if `gluster` answers in time.
fn gluster_option(volume: &str, option: &str) -> Option<String> {
    let out = std::process::Command::new("timeout")
        .args(["5", "gluster", "--mode=script", "volume", "get", volume, option])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    // "Option  Value" then "------  -----" then "performance.write-behind  on"
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let mut f = l.split_whitespace();
        (f.next()? == option).then(|| f.next().map(str::to_owned))?
    })
}

/// Shared storage: other hosts change the keystore (key roll, grant, zone create)
/// without telling this daemon, so it looks at the keystore file every second and
/// re-reads it when it changed.
pub(super) fn watch_keystore(core: std::sync::Arc<crate::fs::Core>) -> std::io::Result<()> {
    let dir = ezfs_dir(&core.backing);
    let stamp = move || -> Option<(u64, i64, i64, i64, i64)> {
        let d = crate::backdir::sys::open_at(
            crate::backdir::sys::at_cwd(),
            dir.as_os_str(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )
        .ok()?;
        let st = crate::backdir::sys::stat_at(d.as_fd(), std::ffi::OsStr::new("keystore.json")).ok()?;
        Some((
            st.st_ino,
            st.st_size,
            st.st_mtime,
            st.st_mtime_nsec,
            st.st_ctime_nsec,
        ))
    };
    let mut seen = stamp();
    std::thread::Builder::new()
        .name("ezfs-keystore-watch".into())
        .spawn(move || loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
            let now = stamp();
            if now.is_some() && now != seen {
                seen = now;
                match core.reload() {
                    Ok(()) => log::info!("the keystore changed (another host): re-read"),
                    Err(e) => log::error!("the keystore changed, but re-reading it failed: {e}"),
                }
            }
        })
        .map(drop)
}

/// Whether the backing dir is reached through a FUSE client (GlusterFS's, for one),
/// whose page cache does not see other hosts' writes: the daemon then drops what it
/// reads under a lock from that cache first.
pub(super) fn client_caches_pages(backing: &Path) -> bool {
    let fuse = crate::backdir::sys::open_at(
        crate::backdir::sys::at_cwd(),
        backing.as_os_str(),
        libc::O_PATH | libc::O_DIRECTORY,
        0,
    )
    .is_ok_and(|fd| crate::backdir::sys::on_fuse(fd.as_fd()));
    if fuse {
        log::info!(
            "{} is on a FUSE file system: what is read under a lock is read from it again",
            backing.display()
        );
    }
    fuse
}
