//! `mount.fuse.ezfs`: the helper that `mount(8)` runs for `mount -t fuse.ezfs` and for
//! `/etc/fstab` lines of type `fuse.ezfs` (installed as a link to the `ezfs` binary).
//!
//! `mount(8)` calls it as `mount.fuse.ezfs BACKING MOUNTPOINT [-sfnv] [-o OPTIONS]`.
//! The options of the fstab line are translated to `ezfs mount`'s: `passphrase_file=F`
//! (the passphrase never goes on a command line), `allow_other`, `ro`; what only
//! `mount(8)` and systemd read (`nofail`, `noauto`, `_netdev`, `x-systemd.*`, ...) is
//! dropped; everything else goes to the kernel as `-o`.

use super::mount::{self, MountArgs};
use super::{Failure, PassArgs};
use std::ffi::OsString;
use std::path::PathBuf;

/// What an fstab line's options become.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Translated {
    pub passphrase_file: Option<PathBuf>,
    pub allow_other: bool,
    pub read_only: bool,
    /// Options for the kernel (`-o`).
    pub fuse: Vec<String>,
}

/// Options that `mount(8)`, systemd or the helper itself consume: never passed on.
fn for_mount_only(o: &str) -> bool {
    matches!(
        o,
        "" | "defaults"
            | "auto"
            | "noauto"
            | "nofail"
            | "_netdev"
            | "user"
            | "users"
            | "owner"
            | "group"
            | "rw"
    ) || o.starts_with("x-")
        || o.starts_with("comment=")
        || o.starts_with("helper=")
}

/// Translates the comma-separated `-o` option lists of a mount helper call.
pub fn translate(options: &[String]) -> Result<Translated, String> {
    let mut t = Translated::default();
    for o in options.iter().flat_map(|s| s.split(',')) {
        if let Some(f) = o.strip_prefix("passphrase_file=") {
            if f.is_empty() {
                return Err("passphrase_file= names no file".into());
            }
            t.passphrase_file = Some(PathBuf::from(f));
        } else if o == "allow_other" {
            t.allow_other = true;
        } else if o == "ro" {
            t.read_only = true;
        } else if !for_mount_only(o) {
            t.fuse.push(o.to_owned());
        }
    }
    Ok(t)
}

/// Runs as the mount helper; returns the exit code (`mount(8)`'s convention: 0 or 1,
/// 2 for bad usage).
pub fn run(args: Vec<OsString>) -> i32 {
    let mut positional = Vec::new();
    let mut options = Vec::new();
    let mut it = args.into_iter().skip(1);
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("-o") => match it.next() {
                Some(v) => options.push(v.to_string_lossy().into_owned()),
                None => return usage("-o needs options"),
            },
            // the type mount(8) may pass along, and its flags: sloppy, fake, no mtab,
            // verbose (ezfs needs none of them)
            Some("-t") => {
                it.next();
            }
            Some(f) if f.starts_with('-') && f.len() > 1 && f[1..].chars().all(|c| "sfnvi".contains(c)) => {}
            Some(f) if f.starts_with("-o") => options.push(f[2..].to_owned()),
            _ => positional.push(a),
        }
    }
    let [backing, mountpoint] = <[OsString; 2]>::try_from(positional).unwrap_or_default();
    if backing.is_empty() || mountpoint.is_empty() {
        return usage("usage: mount.fuse.ezfs BACKING MOUNTPOINT [-o OPTIONS]");
    }
    // the old "TYPE#SOURCE" form of fuse fstab lines
    let backing = match backing.to_str().and_then(|s| s.strip_prefix("ezfs#")) {
        Some(s) => OsString::from(s),
        None => backing,
    };
    let t = match translate(&options) {
        Ok(t) => t,
        Err(e) => return usage(&e),
    };
    let a = MountArgs {
        backing: backing.into(),
        mountpoint: mountpoint.into(),
        read_only: t.read_only,
        allow_other: t.allow_other,
        passthrough: false,
        // -o edek_pool=… and the like stay in `options`
        edek_pool: None,
        edek_pool_low: None,
        dek_cache_ttl: None,
        // -o shared_storage and -o attr_timeout= stay in `options` too
        shared_storage: false,
        attr_timeout: None,
        options: t.fuse,
        foreground: false,
        pass: PassArgs {
            passphrase_file: t.passphrase_file,
        },
    };
    match mount::mount(a) {
        Ok(()) => 0,
        Err(Failure { code, msg }) => {
            eprintln!("mount.fuse.ezfs: {}", crate::text::strip_os_error(&msg));
            code
        }
    }
}

fn usage(msg: &str) -> i32 {
    eprintln!("mount.fuse.ezfs: {msg}");
    2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fstab_options_are_translated() {
        let t = translate(&[
            "rw,nofail,_netdev,x-systemd.automount,x-systemd.requires=kms.service,noauto".into(),
            "passphrase_file=/etc/ezfs/pw,allow_other,noatime,comment=backup".into(),
        ])
        .unwrap();
        assert_eq!(
            t,
            Translated {
                passphrase_file: Some("/etc/ezfs/pw".into()),
                allow_other: true,
                read_only: false,
                fuse: vec!["noatime".into()],
            }
        );
        assert!(translate(&["ro".into()]).unwrap().read_only);
        assert!(translate(&["passphrase_file=".into()]).is_err());
    }
}
