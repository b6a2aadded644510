//! `ezfs init`, `ezfs key …` and `ezfs passwd`: keystore commands. They work whether
//! or not the backing dir is mounted; a running mount is told to reload the keystore.

use super::{mountinfo, users, CliResult, Failure, PassArgs};
use crate::control::{self, ClientError, Request};
use crate::keys::exec::{ExecProvider, EXEC_PREFIX};
use crate::keys::keystore::{read_body, Body, Principal};
use crate::keys::passphrase::{self, Passphrase};
use crate::keys::{KdfParams, Keystore};
use crate::zone::usage::{self, Usage};
use clap::Subcommand;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum KeyCmd {
    /// Create a zone key (version 1).
    Create {
        name: String,
        #[command(flatten)]
        at: BackingArg,
        #[command(flatten)]
        pass: PassArgs,
    },
    /// Add a new version of a key; new files use it from now on.
    Roll {
        name: String,
        #[command(flatten)]
        at: BackingArg,
        #[command(flatten)]
        pass: PassArgs,
    },
    /// List keys: versions and the zones using each (from the running mount, which
    /// authenticated the keystore; otherwise the passphrase is asked for).
    List {
        #[command(flatten)]
        at: BackingArg,
        #[command(flatten)]
        pass: PassArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a key and all its versions (refused while a zone uses it).
    Delete {
        name: String,
        #[command(flatten)]
        at: BackingArg,
        #[command(flatten)]
        pass: PassArgs,
    },
    /// Drop the versions of a key that no file uses any more (the newest always stays).
    Prune {
        name: String,
        #[command(flatten)]
        at: BackingArg,
        #[command(flatten)]
        pass: PassArgs,
    },
    /// Let a user or group open files in the zones of a key.
    Grant {
        name: String,
        #[command(flatten)]
        who: WhoArg,
        #[command(flatten)]
        at: BackingArg,
        #[command(flatten)]
        pass: PassArgs,
    },
    /// Take back a grant.
    Revoke {
        name: String,
        #[command(flatten)]
        who: WhoArg,
        #[command(flatten)]
        at: BackingArg,
        #[command(flatten)]
        pass: PassArgs,
    },
    /// Show who may use a key: its owner, root, and the users and groups granted.
    Acl {
        name: String,
        #[command(flatten)]
        at: BackingArg,
        #[command(flatten)]
        pass: PassArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// A user or a group, by name or number.
#[derive(clap::Args, Debug, Clone)]
#[group(required = true, multiple = false)]
pub struct WhoArg {
    /// A user name or uid.
    #[arg(long, value_name = "USER")]
    user: Option<String>,
    /// A group name or gid.
    #[arg(long, value_name = "GROUP")]
    group: Option<String>,
}

impl WhoArg {
    fn resolve(&self) -> Result<(Principal, String), Failure> {
        match (&self.user, &self.group) {
            (Some(u), _) => users::uid_of(u)
                .map(|id| (Principal::User(id), format!("user {}", users::user_name(id))))
                .ok_or_else(|| Failure::op(format!("no user named '{u}'"))),
            (_, Some(g)) => users::gid_of(g)
                .map(|id| (Principal::Group(id), format!("group {}", users::group_name(id))))
                .ok_or_else(|| Failure::op(format!("no group named '{g}'"))),
            _ => Err(Failure::usage("give --user or --group")),
        }
    }
}

/// Which backing dir a key command acts on.
#[derive(clap::Args, Debug, Clone)]
pub struct BackingArg {
    /// The backing directory; default: that of the ezfs mount holding the current directory.
    #[arg(long, value_name = "BACKING")]
    backing: Option<PathBuf>,
}

impl BackingArg {
    pub(super) fn resolve(&self) -> Result<PathBuf, Failure> {
        if let Some(b) = &self.backing {
            return b
                .canonicalize()
                .map_err(|e| Failure::op(format!("{}: {e}", b.display())));
        }
        let cwd = std::env::current_dir().map_err(Failure::op)?;
        mountinfo::mount_of(&cwd).map(|m| m.backing).ok_or_else(|| {
            Failure::usage("no --backing given and the current directory is not inside an ezfs mount")
        })
    }
}

fn obtain(pass: &PassArgs, what: &str, confirm: bool) -> Result<Passphrase, Failure> {
    passphrase::obtain(pass.passphrase_file.as_deref(), what, confirm).map_err(Failure::op)
}

pub(super) fn unlock(backing: &Path, pass: &PassArgs) -> Result<Keystore, Failure> {
    // fail early, before prompting, when the directory is not a backing dir
    read_body(backing)?;
    Ok(Keystore::unlock(backing, &obtain(pass, "passphrase", false)?)?)
}

/// The keystore's public part, authenticated: as the running mount authenticated it,
/// else unlocked here with the passphrase (its MAC is checked with the master key). An
/// edited keystore (an ACL added by hand, say) is never shown as real.
fn authentic_body(backing: &Path, pass: &PassArgs) -> Result<Body, Failure> {
    read_body(backing)?;
    match control::call(backing, &Request::KeyList) {
        Ok(v) => return serde_json::from_value(v).map_err(Failure::op),
        Err(ClientError::NotMounted(_)) => {}
        Err(e @ ClientError::Impostor(..)) => eprintln!("ezfs: warning: {e}"),
        Err(e) => return Err(Failure::op(e)),
    }
    Ok(unlock(backing, pass)?.body().clone())
}

/// Which key versions the files of the backing dir's zones use.
fn scan_usage(backing: &Path, registered: &[String]) -> Usage {
    match crate::backdir::sys::open_at(
        crate::backdir::sys::at_cwd(),
        backing.as_os_str(),
        libc::O_PATH | libc::O_DIRECTORY,
        0,
    ) {
        Ok(root) => usage::scan(std::os::fd::AsFd::as_fd(&root), registered),
        Err(_) => Usage::default(),
    }
}

/// Tells a running mount of `backing` (if any) to re-read the keystore.
pub(super) fn notify_mount(backing: &Path) -> CliResult {
    match control::call(backing, &Request::Reload) {
        Ok(_) | Err(ClientError::NotMounted(_)) => Ok(()),
        Err(e @ ClientError::Impostor(..)) => {
            eprintln!("ezfs: warning: {e}");
            Ok(())
        }
        Err(e) => Err(Failure::op(format!(
            "the keystore changed, but the running mount did not reload it: {e}"
        ))),
    }
}

/// Checks a `--key-provider` setting and makes its program path absolute (the mount
/// daemon runs from `/`).
fn provider_setting(setting: &str) -> Result<String, Failure> {
    let rest = setting.strip_prefix(EXEC_PREFIX).ok_or_else(|| {
        Failure::usage(format!(
            "unknown key provider '{setting}': use exec:PROGRAM [ARGS…]"
        ))
    })?;
    let mut words = rest.split_whitespace();
    let program = words
        .next()
        .ok_or_else(|| Failure::usage("--key-provider exec: names no program"))?;
    let program = if program.contains('/') {
        Path::new(program)
            .canonicalize()
            .map_err(|e| Failure::op(format!("key provider {program}: {e}")))?
            .display()
            .to_string()
    } else {
        program.to_owned()
    };
    Ok(std::iter::once(format!("{EXEC_PREFIX}{program}"))
        .chain(words.map(str::to_owned))
        .collect::<Vec<_>>()
        .join(" "))
}

/// `recovery`: `None` for no recovery key; `Some(None)` to print it once;
/// `Some(Some(file))` to write it to a new file.
pub fn init(
    backing: &Path,
    pass: &PassArgs,
    key_provider: Option<&str>,
    recovery: Option<Option<&Path>>,
) -> CliResult {
    let provider = key_provider.map(provider_setting).transpose()?;
    // the passphrase first: nothing is created unless init can succeed
    let pw = obtain(pass, "passphrase", true)?;
    // the recovery key file next (exclusively): an existing file is never
    // overwritten, and init fails before anything else is made
    let rk_file = match recovery.flatten() {
        Some(f) => Some(
            open_new_secret_file(f)
                .map_err(|e| Failure::op(format!("cannot create {}: {e}", f.display())))?,
        ),
        None => None,
    };
    let drop_rk_file = || {
        if let Some(f) = recovery.flatten() {
            let _ = std::fs::remove_file(f);
        }
    };
    // the outermost directory this command creates, removed whole if init fails
    let created = backing
        .ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
        .last();
    if created.is_some() {
        if let Some(parent) = backing.parent().filter(|p| !p.as_os_str().is_empty()) {
            if let Err(e) = std::fs::create_dir_all(parent) {
                drop_rk_file();
                return Err(undo_init(
                    backing,
                    created,
                    Failure::op(format!("cannot create {}: {e}", parent.display())),
                ));
            }
        }
        if let Err(e) =
            std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700).create(backing)
        {
            drop_rk_file();
            return Err(undo_init(
                backing,
                created,
                Failure::op(format!("cannot create {}: {e}", backing.display())),
            ));
        }
    }
    let made = Keystore::init(backing, &pw, KdfParams::default()).and_then(|mut ks| {
        if let Some(p) = &provider {
            ks.set_provider(p)?;
        }
        recovery.map(|_| ks.new_recovery_key()).transpose()
    });
    let rk = match made {
        Ok(rk) => rk,
        Err(e) => {
            drop_rk_file();
            return Err(undo_init(backing, created, e.into()));
        }
    };
    if let Some(rk) = &rk {
        let text = crate::keys::recovery::format_key(rk);
        match (rk_file, recovery.flatten()) {
            (Some(mut f), Some(path)) => {
                let written = std::io::Write::write_all(&mut f, format!("{}\n", text.as_str()).as_bytes())
                    .and_then(|_| f.sync_all());
                if let Err(e) = written {
                    let _ = std::fs::remove_file(path);
                    return Err(undo_init(
                        backing,
                        created,
                        Failure::op(format!("cannot write {}: {e}", path.display())),
                    ));
                }
                println!(
                    "recovery key written to {} (keep it apart from the backing dir)",
                    path.display()
                );
            }
            _ => {
                println!("recovery key (shown once; it opens the keystore if the passphrase is lost):");
                println!("  {}", text.as_str());
            }
        }
    }
    println!(
        "initialized {} (mode 0700; keystore in {}/.ezfs{})",
        backing.display(),
        backing.display(),
        provider.map_or(String::new(), |p| format!("; zone keys in {p}"))
    );
    Ok(())
}

/// Leaves nothing behind that a failed init made (`created`: the outermost directory
/// it created); returns `why`.
fn undo_init(backing: &Path, created: Option<&Path>, why: Failure) -> Failure {
    let undo = match created {
        Some(dir) => std::fs::remove_dir_all(dir),
        None => std::fs::remove_dir_all(crate::keys::keystore::ezfs_dir(backing)),
    };
    if let Err(u) = undo.or_else(|u| {
        if u.kind() == std::io::ErrorKind::NotFound {
            Ok(())
        } else {
            Err(u)
        }
    }) {
        eprintln!(
            "ezfs: warning: could not remove what init made in {}: {u}",
            backing.display()
        );
    }
    why
}

/// Creates `path` for a secret (mode 0600): never an existing file, never through a
/// link.
pub(super) fn open_new_secret_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

fn real_uid() -> u32 {
    // SAFETY: getuid cannot fail.
    unsafe { libc::getuid() }
}

#[derive(Serialize)]
struct KeyView<'a> {
    name: &'a str,
    current_version: u32,
    versions: Vec<VersionView>,
    owner: u32,
    created: u64,
    /// Held by the external key provider.
    external: bool,
    zones: Vec<ZoneUse>,
}

#[derive(Serialize)]
struct VersionView {
    version: u32,
    created: u64,
    /// Files whose EDEK is wrapped with this version.
    files: u64,
}

/// A zone of a key and how many of its files use each version.
#[derive(Serialize)]
struct ZoneUse {
    path: String,
    files_by_version: BTreeMap<u32, u64>,
}

fn key_views<'a>(body: &'a Body, usage: &Usage) -> Vec<KeyView<'a>> {
    body.keys
        .iter()
        .map(|(name, k)| KeyView {
            name,
            current_version: k.current(),
            versions: k
                .versions
                .iter()
                .map(|v| VersionView {
                    version: v.version,
                    created: v.created,
                    files: usage.files(name, v.version),
                })
                .collect(),
            owner: k.owner,
            created: k.created,
            external: k.external,
            zones: body
                .zones
                .values()
                .filter(|z| &z.key == name)
                .map(|z| ZoneUse {
                    path: format!("/{}", z.path),
                    files_by_version: usage
                        .zones
                        .get(&z.path)
                        .map(|m| {
                            m.iter()
                                .filter_map(|(kv, n)| {
                                    let (k, v) = kv.rsplit_once('@')?;
                                    (k == name).then(|| Some((v.parse().ok()?, *n)))?
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                })
                .collect(),
        })
        .collect()
}

/// "v1: 3 files, v2: 10 files" style summary of a version map.
fn by_version(m: &BTreeMap<u32, u64>) -> String {
    if m.is_empty() {
        return "no files".into();
    }
    m.iter()
        .map(|(v, n)| format!("{n} on @{v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn run(cmd: KeyCmd) -> CliResult {
    match cmd {
        KeyCmd::Create { name, at, pass } => {
            let backing = at.resolve()?;
            crate::keys::validate_key_name(&name)?;
            let mut ks = unlock(&backing, &pass)?;
            let version = match external(&ks)? {
                Some(p) => {
                    if ks.body().keys.contains_key(&name) {
                        return Err(crate::keys::KeyError::KeyExists(name).into());
                    }
                    let v = p.create(&name)?;
                    ks.create_external_key(&name, real_uid(), v)?;
                    v
                }
                None => {
                    ks.create_key(&name, real_uid())?;
                    1
                }
            };
            notify_mount(&backing)?;
            println!("created key {name}@{version}");
        }
        KeyCmd::Roll { name, at, pass } => {
            let backing = at.resolve()?;
            let mut ks = unlock(&backing, &pass)?;
            let v = if ks.key(&name)?.external {
                let p =
                    external(&ks)?.ok_or_else(|| Failure::op("no external key provider is configured"))?;
                let v = p.roll(&name)?;
                ks.add_external_version(&name, v)?;
                v
            } else {
                ks.roll_key(&name)?
            };
            notify_mount(&backing)?;
            println!("rolled key {name} to version {v}; new files use {name}@{v}");
        }
        KeyCmd::Prune { name, at, pass } => {
            let backing = at.resolve()?;
            let mut ks = unlock(&backing, &pass)?;
            ks.key(&name)?;
            let usage = scan_usage(
                &backing,
                &ks.body()
                    .zones
                    .values()
                    .map(|z| z.path.clone())
                    .collect::<Vec<_>>(),
            );
            if usage.unreadable > 0 {
                eprintln!(
                    "ezfs: warning: {} file(s) in zones have unreadable headers (see 'ezfs fsck'); \
                     their key versions are unknown",
                    usage.unreadable
                );
            }
            let dropped = ks.prune_key(&name, &|v| usage.files(&name, v) > 0)?;
            notify_mount(&backing)?;
            let current = ks.current_version(&name)?;
            if dropped.is_empty() {
                println!("nothing to prune: every version of {name} is in use or the newest");
            } else {
                let list: Vec<String> = dropped.iter().map(|v| format!("{name}@{v}")).collect();
                println!("pruned {}", list.join(", "));
            }
            let still: Vec<u32> = ks
                .key(&name)?
                .versions
                .iter()
                .map(|v| v.version)
                .filter(|&v| v != current)
                .collect();
            if !still.is_empty() {
                for v in &still {
                    let ex = usage
                        .examples
                        .get(&name)
                        .and_then(|m| m.get(v))
                        .cloned()
                        .unwrap_or_default();
                    let n = usage.files(&name, *v);
                    eprintln!(
                        "ezfs: {name}@{v} is still used by {n} file(s): /{}{}",
                        ex.join(", /"),
                        if n > ex.len() as u64 {
                            format!(", … ('ezfs zone files ZONE --version {v}' lists them all)")
                        } else {
                            String::new()
                        }
                    );
                }
                return Err(Failure::op(format!(
                    "kept {} version(s) of {name} that files still use; run 'ezfs zone reencrypt' on their zones first",
                    still.len()
                )));
            }
        }
        KeyCmd::Grant { name, who, at, pass } => change_acl(&name, &who, &at, &pass, true)?,
        KeyCmd::Revoke { name, who, at, pass } => change_acl(&name, &who, &at, &pass, false)?,
        KeyCmd::Acl { name, at, pass, json } => {
            let body = authentic_body(&at.resolve()?, &pass)?;
            let k = body
                .keys
                .get(&name)
                .ok_or_else(|| crate::keys::KeyError::NoSuchKey(name.clone()))?;
            if json {
                let who = |id: u32, n: Option<String>| serde_json::json!({"id": id, "name": n});
                let v = serde_json::json!({
                    "key": name,
                    "owner": who(k.owner, users::login_of(k.owner)),
                    "users": k.acl.users.iter().map(|u| who(*u, users::login_of(*u))).collect::<Vec<_>>(),
                    "groups": k.acl.groups.iter().map(|g| who(*g, users::group_of(*g))).collect::<Vec<_>>(),
                });
                println!("{}", serde_json::to_string_pretty(&v).expect("serializes"));
                return Ok(());
            }
            println!("key {name}:");
            println!("  owner:  {}", users::user_name(k.owner));
            println!("  root:   always");
            for u in &k.acl.users {
                println!("  user:   {}", users::user_name(*u));
            }
            for g in &k.acl.groups {
                println!("  group:  {}", users::group_name(*g));
            }
        }
        KeyCmd::Delete { name, at, pass } => {
            let backing = at.resolve()?;
            unlock(&backing, &pass)?.delete_key(&name)?;
            notify_mount(&backing)?;
            println!("deleted key {name}");
        }
        KeyCmd::List { at, json, pass } => {
            let backing = at.resolve()?;
            let body = authentic_body(&backing, &pass)?;
            let usage = scan_usage(
                &backing,
                &body.zones.values().map(|z| z.path.clone()).collect::<Vec<_>>(),
            );
            let views = key_views(&body, &usage);
            if json {
                println!("{}", serde_json::to_string_pretty(&views).expect("serializes"));
            } else if views.is_empty() {
                println!("no keys");
            } else {
                println!(
                    "{:<20} {:>7}  {:<28}  ZONES",
                    "KEY", "CURRENT", "FILES BY VERSION"
                );
                for k in views {
                    let files: BTreeMap<u32, u64> = k.versions.iter().map(|v| (v.version, v.files)).collect();
                    let zones = if k.zones.is_empty() {
                        "-".to_string()
                    } else {
                        k.zones
                            .iter()
                            .map(|z| format!("{} ({})", z.path, by_version(&z.files_by_version)))
                            .collect::<Vec<_>>()
                            .join("; ")
                    };
                    let versions = files
                        .iter()
                        .map(|(v, n)| format!("@{v}:{n}"))
                        .collect::<Vec<_>>()
                        .join(" ");
                    println!(
                        "{:<20} {:>7}  {:<28}  {zones}",
                        format!("{}{}", k.name, if k.external { "*" } else { "" }),
                        format!("@{}", k.current_version),
                        versions
                    );
                }
                if body.keys.values().any(|k| k.external) {
                    println!(
                        "* held by the external key provider {}",
                        body.provider.as_deref().unwrap_or("?")
                    );
                }
            }
        }
    }
    Ok(())
}

/// `key grant` (`grant`) or `key revoke`.
fn change_acl(name: &str, who: &WhoArg, at: &BackingArg, pass: &PassArgs, grant: bool) -> CliResult {
    let backing = at.resolve()?;
    let (p, shown) = who.resolve()?;
    let mut ks = unlock(&backing, pass)?;
    let changed = if grant {
        ks.grant(name, p)?
    } else {
        ks.revoke(name, p)?
    };
    notify_mount(&backing)?;
    match (grant, changed) {
        (true, true) => println!("granted {shown} the use of key {name}"),
        (true, false) => println!("{shown} already had the use of key {name}"),
        (false, true) => println!("revoked the use of key {name} from {shown}"),
        (false, false) => println!("{shown} had no grant on key {name}"),
    }
    Ok(())
}

/// The external key provider, when the keystore names one.
fn external(ks: &Keystore) -> Result<Option<ExecProvider>, Failure> {
    Ok(ks
        .body()
        .provider
        .as_deref()
        .map(ExecProvider::from_setting)
        .transpose()?)
}

pub fn passwd(backing: &Path, pass: &PassArgs, new_file: Option<&Path>, rotate: bool) -> CliResult {
    read_body(backing)?;
    if rotate {
        // the daemon holds the master key and checks the keystore with it
        if let control::Probe::Daemon(m) = control::probe(backing) {
            return Err(Failure::op(format!(
                "{} is mounted at {}; unmount it before rotating the master key",
                backing.display(),
                m.mountpoint.display()
            )));
        }
    }
    let old = obtain(pass, "passphrase", false)?;
    let mut ks = Keystore::unlock(backing, &old)?;
    let new = match (new_file, rotate) {
        (None, true) => None,
        _ => Some(passphrase::obtain_new(new_file).map_err(Failure::op)?),
    };
    if !rotate {
        let new = new.expect("asked for");
        if *new == *old {
            return Err(Failure::op(
                "the new passphrase is the same as the current one; nothing changed",
            ));
        }
        ks.change_passphrase(&new)?;
        println!("passphrase changed for {}", backing.display());
        return Ok(());
    }
    if !ks.rotating() {
        ks.rotate_master(new.as_deref().map_or(&old[..], |n| &n[..]))?;
    }
    let (done, skipped) = reauthenticate_markers(backing, &ks)?;
    for s in &skipped {
        eprintln!("ezfs: warning: {s}");
    }
    ks.finish_rotation()?;
    println!(
        "master key rotated for {}: {} key version(s) sealed again, {done} zone marker(s) authenticated again{}",
        backing.display(),
        ks.body().keys.values().filter(|k| !k.external).map(|k| k.versions.len()).sum::<usize>(),
        if new.is_some() { "; passphrase changed" } else { "" }
    );
    Ok(())
}

/// `passwd --recovery-key-file`: opens the keystore with the recovery key (the
/// passphrase was lost) and sets a new passphrase.
pub fn passwd_recovered(backing: &Path, rk_file: &Path, new_file: Option<&Path>) -> CliResult {
    read_body(backing)?;
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(rk_file).map_err(|e| {
        Failure::op(format!(
            "cannot read the recovery key file {}: {e}",
            rk_file.display()
        ))
    })?);
    let rk = crate::keys::recovery::parse_key(&text).ok_or_else(|| {
        Failure::op(format!(
            "{} holds no recovery key (64 hex digits)",
            rk_file.display()
        ))
    })?;
    let mut ks = Keystore::unlock_with_recovery(backing, &rk)?;
    if ks.rotating() {
        return Err(Failure::op(
            "a master-key rotation is under way; finish it with the passphrase first",
        ));
    }
    let new = passphrase::obtain_new(new_file).map_err(Failure::op)?;
    ks.change_passphrase(&new)?;
    println!("passphrase set for {} with the recovery key", backing.display());
    Ok(())
}

/// Writes every registered zone's marker again with the current master key's MAC;
/// returns how many, and the zones left alone (no authentic marker where the registry
/// says: see 'ezfs zone repair').
fn reauthenticate_markers(backing: &Path, ks: &Keystore) -> Result<(usize, Vec<String>), Failure> {
    use crate::backdir::{resolve, sys};
    use crate::zone::{MarkerRead, MARKER_FILE};
    use std::os::fd::AsFd;
    let root = sys::open_at(
        sys::at_cwd(),
        backing.as_os_str(),
        libc::O_PATH | libc::O_DIRECTORY,
        0,
    )
    .map_err(|e| Failure::op(format!("{}: {e}", backing.display())))?;
    let (mut done, mut skipped) = (0, Vec::new());
    for (id, z) in &ks.body().zones {
        let dir = resolve::open_beneath(
            root.as_fd(),
            Path::new(&z.path),
            libc::O_PATH | libc::O_DIRECTORY,
            false,
        );
        let marker = dir
            .as_ref()
            .ok()
            .map(|d| crate::zone::marker::read_marker(d.as_fd(), &ks.marker_keys()));
        match (dir, marker) {
            (Ok(d), Some(MarkerRead::Valid(m))) if &m.id_hex() == id => {
                resolve::replace_at(
                    d.as_fd(),
                    std::ffi::OsStr::new(MARKER_FILE),
                    &m.encode(ks.master()),
                    0o644,
                )
                .map_err(|e| Failure::op(format!("/{}: cannot write the zone marker: {e}", z.path)))?;
                done += 1;
            }
            _ => skipped.push(format!(
                "zone /{} ({id}) has no authentic marker where the registry says; 'ezfs zone repair /{}' \
                 writes one under the new master key",
                z.path, z.path
            )),
        }
    }
    Ok((done, skipped))
}
