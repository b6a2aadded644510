//! `ezfs init`: a new backing dir and its keystore, optionally with an external key
//! provider and a recovery key; a failed init leaves nothing behind.

use super::backing::{obtain, open_new_secret_file};
use super::{CliResult, Failure, PassArgs};
use crate::keys::exec::EXEC_PREFIX;
use crate::keys::external::KMIP_PREFIX;
use crate::keys::{KdfParams, Keystore};
use std::path::Path;

/// Checks a `--key-provider` setting and makes its program path absolute (the mount
/// daemon runs from `/`).
fn provider_setting(setting: &str) -> Result<String, Failure> {
    if setting.starts_with(KMIP_PREFIX) {
        // the URL and the certificate files are checked now; the servers when used
        crate::keys::kms::kmip::check(setting).map_err(Failure::usage)?;
        return Ok(setting.to_owned());
    }
    let rest = setting.strip_prefix(EXEC_PREFIX).ok_or_else(|| {
        Failure::usage(format!(
            "unknown key provider '{setting}': use exec:PROGRAM [ARGS…] or kmip://HOST:PORT[,HOST:PORT…]?ca=…&cert=…&key=…"
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
