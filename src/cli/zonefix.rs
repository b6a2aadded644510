//! `ezfs zone repair` and `ezfs zone forget`: mending the registry and the markers when
//! they disagree, which makes mount refuse the backing dir (so that no zone is lost
//! silently). Both need the passphrase (the registry and markers are authenticated
//! with the master key) and work mounted or not.

use super::backing::{notify_mount, unlock, BackingArg};
use super::{CliResult, Failure, PassArgs};
use crate::backdir::resolve::{open_beneath, replace_at};
use crate::backdir::sys;
use crate::fs::names::normalize;
use crate::zone::{MarkerRead, ZoneMarker, MARKER_FILE};
use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::path::Path;

/// Writes the marker of the zone registered at `zone` (or of zone `id`, which then
/// moves there).
pub fn repair(zone: &str, id: Option<&str>, at: &BackingArg, pass: &PassArgs) -> CliResult {
    let backing = at.resolve()?;
    let rel = normalize(zone).map_err(Failure::usage)?;
    let rel_s = rel.to_string_lossy().into_owned();
    let shown = format!("/{rel_s}");
    let ks = unlock(&backing, pass)?;
    let zones = &ks.body().zones;
    let (id, entry) = match id {
        Some(id) => zones
            .get_key_value(id)
            .ok_or_else(|| Failure::op(format!("no zone with id {id} is registered")))?,
        None => zones
            .iter()
            .find(|(_, z)| z.path == rel_s)
            .ok_or_else(|| Failure::op(format!("no zone is registered at {shown}; give --id")))?,
    };
    let (id, key, was_at) = (id.clone(), entry.key.clone(), entry.path.clone());
    let root = sys::open_at(
        sys::at_cwd(),
        backing.as_os_str(),
        libc::O_PATH | libc::O_DIRECTORY,
        0,
    )
    .map_err(|e| Failure::op(format!("{}: {e}", backing.display())))?;
    let dir = open_beneath(root.as_fd(), &rel, libc::O_PATH | libc::O_DIRECTORY, false)
        .map_err(|e| Failure::op(format!("{shown}: {e}")))?;
    match crate::zone::marker::read_marker(dir.as_fd(), &ks.marker_keys()) {
        MarkerRead::Valid(m) if m.id_hex() != id => {
            return Err(Failure::op(format!(
                "{shown} is the root of another zone ({}); not changed",
                m.id_hex()
            )))
        }
        _ => {}
    }
    let marker = ZoneMarker {
        zone_id: crate::text::unhex(&id).ok_or_else(|| Failure::op("the registry holds a bad zone id"))?,
        key: key.clone(),
    };
    replace_at(
        dir.as_fd(),
        OsStr::new(MARKER_FILE),
        &marker.encode(ks.master()),
        0o644,
    )
    .map_err(|e| Failure::op(format!("{shown}: cannot write the zone marker: {e}")))?;
    let mut ks = ks;
    if was_at != rel_s {
        ks.register_zone(&id, &key, &rel_s)?;
    }
    notify_mount(&backing)?;
    println!("wrote the marker of zone {id} (key {key}) at {shown}");
    Ok(())
}

/// Removes zone `id` from the registry, once its directory is gone.
pub fn forget(id: &str, at: &BackingArg, pass: &PassArgs) -> CliResult {
    let backing = at.resolve()?;
    let mut ks = unlock(&backing, pass)?;
    let entry = ks
        .body()
        .zones
        .get(id)
        .cloned()
        .ok_or_else(|| Failure::op(format!("no zone with id {id} is registered")))?;
    let root = sys::open_at(
        sys::at_cwd(),
        backing.as_os_str(),
        libc::O_PATH | libc::O_DIRECTORY,
        0,
    )
    .map_err(|e| Failure::op(format!("{}: {e}", backing.display())))?;
    if let Ok(dir) = open_beneath(
        root.as_fd(),
        Path::new(&entry.path),
        libc::O_PATH | libc::O_DIRECTORY,
        false,
    ) {
        if matches!(crate::zone::marker::read_marker(dir.as_fd(), &ks.marker_keys()), MarkerRead::Valid(m) if m.id_hex() == id)
        {
            return Err(Failure::op(format!(
                "zone {id} is still at /{}; remove it with rmdir through the mount (it must be empty)",
                entry.path
            )));
        }
    }
    ks.unregister_zone(id)?;
    notify_mount(&backing)?;
    println!(
        "forgot zone {id} (key {}, last at /{}); files left from it give EIO wherever they are",
        entry.key, entry.path
    );
    Ok(())
}
