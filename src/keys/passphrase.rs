//! Where a passphrase comes from: `--passphrase-file`, `EZFS_PASSPHRASE_FILE`, or a
//! prompt on the terminal. Never a command-line argument.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Environment variable naming a passphrase file.
pub const ENV_FILE: &str = "EZFS_PASSPHRASE_FILE";

/// A passphrase in memory, zeroized on drop.
pub type Passphrase = Zeroizing<Vec<u8>>;

/// Reads a passphrase file: its content up to the first newline (so `echo pw > f` works).
pub fn from_file(path: &Path) -> Result<Passphrase, String> {
    let data = Zeroizing::new(
        std::fs::read(path).map_err(|e| format!("cannot read passphrase file {}: {e}", path.display()))?,
    );
    let end = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let end = if end > 0 && data[end - 1] == b'\r' {
        end - 1
    } else {
        end
    };
    if end == 0 {
        return Err(format!("passphrase file {} is empty", path.display()));
    }
    Ok(Zeroizing::new(data[..end].to_vec()))
}

/// Gets a passphrase from the file option, the environment or the terminal. `what`
/// names it in prompts ("passphrase", "new passphrase"); `confirm` asks twice.
pub fn obtain(file: Option<&Path>, what: &str, confirm: bool) -> Result<Passphrase, String> {
    if let Some(f) = file {
        return from_file(f);
    }
    if let Some(f) = std::env::var_os(ENV_FILE).filter(|v| !v.is_empty()) {
        return from_file(&PathBuf::from(f));
    }
    if !std::io::stdin().is_terminal() {
        return Err(format!(
            "no {what}: give --passphrase-file FILE or set {ENV_FILE} (no terminal to prompt on)"
        ));
    }
    prompt(what, confirm)
}

/// Asks for a passphrase on the terminal (twice with `confirm`).
fn prompt(what: &str, confirm: bool) -> Result<Passphrase, String> {
    let first = Zeroizing::new(
        rpassword::prompt_password(format!("{}: ", capitalize(what)))
            .map_err(|e| format!("cannot read {what}: {e}"))?,
    );
    if first.is_empty() {
        return Err(format!("the {what} must not be empty"));
    }
    if confirm {
        let again = Zeroizing::new(
            rpassword::prompt_password(format!("Repeat {what}: "))
                .map_err(|e| format!("cannot read {what}: {e}"))?,
        );
        if *again != *first {
            return Err(format!("the two {what}s differ"));
        }
    }
    Ok(Zeroizing::new(first.as_bytes().to_vec()))
}

/// Gets a new passphrase: from `file` or a prompt (asked twice), never from the
/// environment's passphrase file, which names the current one.
pub fn obtain_new(file: Option<&Path>) -> Result<Passphrase, String> {
    if let Some(f) = file {
        return from_file(f);
    }
    if !std::io::stdin().is_terminal() {
        return Err("no new passphrase: give --new-passphrase-file FILE (no terminal to prompt on)".into());
    }
    prompt("new passphrase", true)
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_takes_first_line() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pw");
        std::fs::write(&p, b"s3cret\nignored").unwrap();
        assert_eq!(&**from_file(&p).unwrap(), b"s3cret");
        std::fs::write(&p, b"\n").unwrap();
        assert!(from_file(&p).unwrap_err().contains("empty"));
        assert!(from_file(&d.path().join("missing")).is_err());
    }
}
