//! The external key provider (`ezfs init --key-provider exec:PROGRAM`), end to end
//! through scripts/example-key-provider: keys live in its directory, never in the
//! keystore; a provider that hangs or refuses gives EIO for the files that need it,
//! with a log line, while the mount keeps serving everything else.

mod common;

use common::*;
use std::fs;
use std::io::Read;
use std::path::PathBuf;

fn example_provider() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/example-key-provider");
    assert!(p.exists(), "{} is missing", p.display());
    p
}

/// A fixture initialized with the example provider keeping keys in `root/kms`, and key `kx`.
fn provider_fixture() -> (Fixture, PathBuf) {
    // one request unanswered for a second is a dead provider (the daemon and the CLI
    // inherit this); every test here sets the same value
    std::env::set_var("EZFS_KEY_PROVIDER_TIMEOUT", "1");
    let f = Fixture::bare();
    let kms = f.root.join("kms");
    let setting = format!("exec:{} {}", example_provider().display(), kms.display());
    let o = f.run(&[
        "init",
        f.backing.to_str().unwrap(),
        "--passphrase-file",
        f.pass.to_str().unwrap(),
        "--key-provider",
        &setting,
    ]);
    ok(&o, "ezfs init --key-provider");
    ok(&f.key("create", "kx"), "key create kx");
    (f, kms)
}

#[test]
fn keys_live_in_the_provider_and_files_round_trip() {
    let (f, kms) = provider_fixture();
    assert!(kms.join("kx/1").is_file(), "the provider holds kx@1");
    let ks = fs::read_to_string(f.b(".ezfs/keystore.json")).unwrap();
    assert!(
        !ks.contains("\"sealed\""),
        "no key material in the keystore:\n{ks}"
    );

    let m = f.mount();
    f.zone("z", "kx");
    let mut rng = Rng::new(61);
    let big = rng.bytes(300_000);
    fs::write(f.m("z/big"), &big).unwrap();
    fs::write(f.m("z/small"), b"hello").unwrap();
    assert_eq!(f.zone_info("z/big")["key_version"], 1);
    assert!(!contains(&f.raw("z/big"), &big[..64]), "stored encrypted");

    ok(&f.key("roll", "kx"), "key roll kx");
    assert!(kms.join("kx/2").is_file(), "the provider made kx@2");
    fs::write(f.m("z/new"), b"after roll").unwrap();
    assert_eq!(f.zone_info("z/new")["key_version"], 2);

    let o = f.run(&["zone", "reencrypt", "--json", f.m("z").to_str().unwrap()]);
    ok(&o, "zone reencrypt");
    let job: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(job["files_done"], 2, "{job}");
    assert_eq!(f.zone_info("z/big")["key_version"], 2);
    m.unmount();

    let _m = f.mount();
    assert_same(&fs::read(f.m("z/big")).unwrap(), &big, "z/big after remount");
    assert_eq!(fs::read(f.m("z/small")).unwrap(), b"hello");
    assert_eq!(fs::read(f.m("z/new")).unwrap(), b"after roll");
    let keys = f.key_list();
    assert_eq!(keys[0]["external"], true, "{keys:?}");
    assert_eq!(keys[0]["current_version"], 2, "{keys:?}");
}

#[test]
fn hanging_or_refusing_provider_gives_eio_and_the_mount_keeps_serving() {
    let (f, kms) = provider_fixture();
    let m = f.mount();
    f.zone("z", "kx");
    fs::create_dir(f.m("plain")).unwrap();
    fs::write(f.m("plain/p"), b"plain text").unwrap();
    fs::write(f.m("z/a"), b"needs the provider").unwrap();
    fs::write(f.m("z/held"), b"opened before the outage").unwrap();
    m.unmount();

    let m = f.mount();
    // an open file keeps its unwrapped data key: it stays readable during an outage
    let mut held = fs::File::open(f.m("z/held")).unwrap();
    fs::write(kms.join("hang"), b"").unwrap();
    assert_errno(fs::read(f.m("z/a")), libc::EIO, "open while the provider hangs");
    assert_eq!(fs::read(f.m("plain/p")).unwrap(), b"plain text");
    let mut names: Vec<String> = fs::read_dir(f.m("z"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["a", "held"]);
    let mut s = String::new();
    held.read_to_string(&mut s).unwrap();
    assert_eq!(s, "opened before the outage");
    assert!(
        m.log().contains("no answer within"),
        "log names the timeout:\n{}",
        m.log()
    );

    // the provider is restarted on the next request once it answers again
    fs::remove_file(kms.join("hang")).unwrap();
    assert_eq!(fs::read(f.m("z/a")).unwrap(), b"needs the provider");

    fs::write(kms.join("fail"), b"").unwrap();
    // a new open of a file whose key is not cached must ask the provider
    drop(held);
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_errno(
        fs::read(f.m("z/held")),
        libc::EIO,
        "open while the provider refuses",
    );
    assert!(m.log().contains("refused by the test switch"), "{}", m.log());
    fs::remove_file(kms.join("fail")).unwrap();
    assert_eq!(fs::read(f.m("z/held")).unwrap(), b"opened before the outage");
}

#[test]
fn a_missing_provider_program_is_a_clear_error() {
    let f = Fixture::bare();
    let o = f.run(&[
        "init",
        f.backing.to_str().unwrap(),
        "--passphrase-file",
        f.pass.to_str().unwrap(),
        "--key-provider",
        "exec:no-such-kms-program",
    ]);
    ok(&o, "init records the setting");
    let o = f.key("create", "kx");
    code(&o, 1, "key create with a missing provider program");
    assert!(
        stderr_of(&o).contains("cannot start no-such-kms-program"),
        "{}",
        stderr_of(&o)
    );
    let o = f.run(&[
        "init",
        f.root.join("b2").to_str().unwrap(),
        "--passphrase-file",
        f.pass.to_str().unwrap(),
        "--key-provider",
        "vault:x",
    ]);
    code(&o, 2, "unknown provider kind");
}
