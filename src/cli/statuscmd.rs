//! `ezfs status`: every ezfs mount on the machine (or one), alive or dead, with what
//! its daemon says of itself.

use super::{mountinfo, CliResult, Failure};
use crate::control::{self, DaemonStatus, Request};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// One mount, as `status --json` shows it.
#[derive(Serialize)]
struct Entry {
    mountpoint: PathBuf,
    backing: PathBuf,
    /// "live", "dead" (its daemon is gone) or "unreachable" (its daemon does not
    /// answer, or is not one this user may trust).
    state: &'static str,
    /// The command that clears a dead mount.
    #[serde(skip_serializing_if = "Option::is_none")]
    clear: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    daemon: Option<DaemonStatus>,
}

fn entry(m: mountinfo::EzMount) -> Entry {
    if mountinfo::is_dead(&m.mountpoint) {
        return Entry {
            clear: Some(format!("ezfs umount {}", m.mountpoint.display())),
            mountpoint: m.mountpoint,
            backing: m.backing,
            state: "dead",
            error: None,
            daemon: None,
        };
    }
    let (state, error, daemon) = match control::call_mount(&m.backing, &m.mountpoint, &Request::Status)
        .map_err(|e| e.to_string())
        .and_then(|v| serde_json::from_value::<DaemonStatus>(v).map_err(|e| e.to_string()))
    {
        Ok(d) => ("live", None, Some(d)),
        Err(e) => ("unreachable", Some(e), None),
    };
    Entry {
        mountpoint: m.mountpoint,
        backing: m.backing,
        state,
        clear: None,
        error,
        daemon,
    }
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn print(e: &Entry) {
    println!(
        "{} (backing {}): {}",
        e.mountpoint.display(),
        e.backing.display(),
        e.state
    );
    if let Some(c) = &e.clear {
        println!("  its daemon is gone; '{c}' clears it");
    }
    if let Some(err) = &e.error {
        println!("  {err}");
    }
    let Some(d) = &e.daemon else { return };
    let (h, m, s) = (d.uptime_s / 3600, d.uptime_s / 60 % 60, d.uptime_s % 60);
    println!(
        "  daemon {}, up {h}:{m:02}:{s:02}{}, {} open handle(s)",
        d.pid,
        if d.read_only { ", read-only" } else { "" },
        d.open_handles
    );
    let c = &d.counters;
    println!(
        "  since mount: {} read(s) ({}), {} write(s) ({}), {} authentication failure(s), {} EIO",
        c.reads,
        human(c.bytes_read),
        c.writes,
        human(c.bytes_written),
        c.auth_failures,
        c.eio
    );
    if let Some(k) = &d.kms {
        println!(
            "  KMS {}: {} pre-wrapped data key(s) pooled, {} cached",
            if k.reachable { "reachable" } else { "UNREACHABLE" },
            k.pooled_edeks,
            k.cached_deks
        );
    }
    if d.zones.is_empty() {
        println!("  no encryption zones");
    }
    for z in &d.zones {
        let broken = z
            .broken
            .as_ref()
            .map(|b| format!(" BROKEN: {b}"))
            .unwrap_or_default();
        println!("  zone {} (key {}@{}){broken}", z.path, z.key, z.key_version);
    }
    for j in &d.jobs {
        println!(
            "  re-encryption of {}: {}, {}/{} file(s)",
            j.zone,
            j.state_name(),
            j.files_seen(),
            j.files_total
        );
    }
}

pub fn run(mountpoint: Option<&Path>, json: bool) -> CliResult {
    let mut mounts = mountinfo::ezfs_mounts();
    for d in mountinfo::dead_mounts() {
        if !mounts.contains(&d) {
            mounts.push(d);
        }
    }
    if let Some(mp) = mountpoint {
        let abs = std::path::absolute(mp).map_err(Failure::op)?;
        let abs = abs.canonicalize().unwrap_or(abs);
        mounts.retain(|m| m.mountpoint == abs);
        if mounts.is_empty() {
            return Err(Failure::op(format!("{} is not an ezfs mount", mp.display())));
        }
    }
    mounts.sort_by(|a, b| a.mountpoint.cmp(&b.mountpoint));
    let entries: Vec<Entry> = mounts.into_iter().map(entry).collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&entries).expect("serializes"));
    } else if entries.is_empty() {
        println!("no ezfs mounts");
    } else {
        for e in &entries {
            print(e);
        }
    }
    Ok(())
}
