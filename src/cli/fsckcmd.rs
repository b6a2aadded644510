//! `ezfs fsck`: authenticate every header and block; exit 1 when anything is damaged.

use super::{CliResult, Failure, PassArgs};
use crate::fsck;
use crate::keys::keystore::read_body;
use crate::keys::{passphrase, Keystore};
use std::io::{IsTerminal, Write};
use std::path::Path;

pub fn run(backing: &Path, pass: &PassArgs, json: bool, quarantine: bool) -> CliResult {
    read_body(backing)?;
    let pw = passphrase::obtain(pass.passphrase_file.as_deref(), "passphrase", false).map_err(Failure::op)?;
    let ks = Keystore::unlock(backing, &pw)?;
    let tty = std::io::stderr().is_terminal();
    let mut progress = |n: u64| {
        if tty && n % 100 == 0 {
            eprint!("\rchecked {n} files");
            let _ = std::io::stderr().flush();
        }
    };
    let keys = crate::keys::LocalProvider::new(ks);
    let report = fsck::check(backing, &keys, quarantine, &mut progress);
    if tty {
        eprint!("\r");
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report).expect("serializes"));
    } else {
        for d in &report.damaged {
            let blocks: Vec<String> = d
                .blocks
                .iter()
                .map(|(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") })
                .collect();
            let at = if blocks.is_empty() {
                String::new()
            } else {
                format!(" (blocks {})", blocks.join(", "))
            };
            let moved = d
                .quarantined_to
                .as_ref()
                .map(|t| format!("; moved to /{t}"))
                .unwrap_or_default();
            println!("DAMAGED /{}: {}{at}{moved}", d.path, d.problem);
        }
        for p in &report.zone_problems {
            println!("ZONE    {p}");
        }
        println!(
            "{} zone(s), {} file(s), {} block(s) checked: {} damaged file(s), {} zone problem(s)",
            report.zones,
            report.files,
            report.blocks,
            report.damaged.len(),
            report.zone_problems.len()
        );
    }
    if report.is_clean() {
        Ok(())
    } else {
        // the report above says what is wrong; nothing more for stderr
        Err(Failure {
            code: 1,
            msg: String::new(),
        })
    }
}
