//! `ezfs fsck`: every header and block is authenticated; damage is reported per file
//! and block range, with exit 1; quarantine moves damaged files, never deletes them.

mod common;

use common::*;

fn fsck(f: &Fixture, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "fsck",
        f.backing.to_str().unwrap(),
        "--passphrase-file",
        f.pass.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    f.run(&args)
}

/// A zone `z` with three files of 3 blocks each, written through a mount that is
/// unmounted again before returning.
fn populated() -> Fixture {
    let f = Fixture::new();
    {
        let _m = f.mount();
        f.zone("z", "k1");
        for name in ["a", "b", "c"] {
            std::fs::write(f.m(&format!("z/{name}")), vec![name.as_bytes()[0]; 3 * 4096]).unwrap();
        }
        std::fs::write(f.m("plain.txt"), b"not in a zone").unwrap();
    }
    f
}

#[test]
fn clean_backing_passes() {
    let f = populated();
    let o = fsck(&f, &["--json"]);
    ok(&o, "fsck");
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["zones"], 1);
    assert_eq!(r["files"], 3);
    assert_eq!(r["blocks"], 9);
    assert_eq!(r["damaged"].as_array().unwrap().len(), 0);
}

#[test]
fn damaged_blocks_and_headers_are_reported_and_quarantined() {
    let f = populated();
    f.flip_raw("z/b", data_offset(1) + 17, 0x40);
    f.flip_raw("z/c", 60, 0x01);
    let o = fsck(&f, &[]);
    code(&o, 1, "fsck with damage");
    let text = stdout_of(&o);
    assert!(
        text.contains("DAMAGED /z/b") && text.contains("blocks 1"),
        "{text}"
    );
    assert!(
        text.contains("DAMAGED /z/c") && text.contains("header authentication failed"),
        "{text}"
    );
    assert!(!text.contains("/z/a"), "{text}");

    let o = fsck(&f, &["--json", "--quarantine"]);
    code(&o, 1, "fsck --quarantine");
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let damaged = r["damaged"].as_array().unwrap();
    assert_eq!(damaged.len(), 2, "{r}");
    assert_eq!(damaged[0]["blocks"], serde_json::json!([[1, 1]]));
    assert!(!f.b("z/b").exists() && !f.b("z/c").exists());
    assert!(f.b("z/lost+found/z_b").exists() && f.b("z/lost+found/z_c").exists());
    assert!(f.b("z/a").exists());
    // quarantined files are left out of the next check, which is then clean
    ok(&fsck(&f, &[]), "fsck after quarantine");
    let _m = f.mount();
    assert_eq!(std::fs::read(f.m("z/a")).unwrap(), vec![b'a'; 3 * 4096]);
}

#[test]
fn wrong_passphrase_and_missing_backing_fail_clearly() {
    let f = populated();
    let bad = f.root.join("bad");
    std::fs::write(&bad, "nope\n").unwrap();
    let o = f.run(&[
        "fsck",
        f.backing.to_str().unwrap(),
        "--passphrase-file",
        bad.to_str().unwrap(),
    ]);
    code(&o, 1, "fsck wrong passphrase");
    assert!(stderr_of(&o).contains("wrong passphrase"), "{}", stderr_of(&o));
    let o = f.run(&[
        "fsck",
        f.root.to_str().unwrap(),
        "--passphrase-file",
        f.pass.to_str().unwrap(),
    ]);
    code(&o, 1, "fsck of a non-backing dir");
    assert!(
        stderr_of(&o).contains("not an ezfs backing directory"),
        "{}",
        stderr_of(&o)
    );
}
