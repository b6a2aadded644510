//! Zone keys in a real KMIP server (PyKMIP, `ezfs init --key-provider kmip://…`),
//! end to end through mounts: round trip, roll + reencrypt + prune, a daemon
//! restart, the audit log, failover between two servers sharing one database under a
//! fio verify job, a full outage and recovery, tampered headers and wrong answers, and
//! the sharing of unwraps between concurrent opens and the DEK cache.

mod common;
#[path = "common/kmip.rs"]
mod kmip_harness;

use common::*;
use kmip_harness::{KmipPki, KmipServer};
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// A fixture whose keystore keeps zone keys in `servers.len()` PyKMIP servers sharing
/// one database, with key `k1` created there.
struct KmsFixture {
    f: Fixture,
    servers: Vec<KmipServer>,
    _pki: KmipPki,
    url: String,
}

impl KmsFixture {
    fn new(servers: usize) -> KmsFixture {
        let f = Fixture::bare();
        let pki = KmipPki::new(&f.root.join("pki"));
        let db = f.root.join("kms.db");
        let servers: Vec<KmipServer> = (0..servers).map(|_| KmipServer::start(&pki, &db)).collect();
        let refs: Vec<&KmipServer> = servers.iter().collect();
        // a short timeout: an outage test waits for it
        let url = pki.url(&refs, "&timeout=3");
        ok(&init_with(&f, &url), "ezfs init --key-provider kmip://");
        ok(&f.key("create", "k1"), "key create k1 in the KMS");
        KmsFixture {
            f,
            servers,
            _pki: pki,
            url,
        }
    }

    fn audit(&self) -> String {
        fs::read_to_string(self.f.backing.join(".ezfs/audit.log")).unwrap_or_default()
    }

    fn audit_count(&self, needle: &str) -> usize {
        self.audit().lines().filter(|l| l.contains(needle)).count()
    }
}

/// Pre-wrapped data keys in the pool of `f`'s mount (`ezfs status --json`).
fn pooled(f: &Fixture) -> u64 {
    let o = f.run(&["status", "--json", f.mnt.to_str().unwrap()]);
    ok(&o, "status --json");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("status --json is JSON");
    v[0]["daemon"]["kms"]["pooled_edeks"].as_u64().unwrap_or(0)
}

/// Waits until `f`'s mount has no open handle: the kernel sends RELEASE after
/// close(2) returns, so a file just read may still hold its DEK in memory.
fn wait_closed(f: &Fixture) {
    let t0 = Instant::now();
    loop {
        let o = f.run(&["status", "--json", f.mnt.to_str().unwrap()]);
        ok(&o, "status --json");
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("status --json is JSON");
        if v[0]["daemon"]["open_handles"].as_u64() == Some(0) {
            return;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "handles stay open: {v}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `ezfs init` of `f`'s backing dir with key provider `url`.
fn init_with(f: &Fixture, url: &str) -> std::process::Output {
    f.run(&[
        "init",
        f.backing.to_str().unwrap(),
        "--passphrase-file",
        f.pass.to_str().unwrap(),
        "--no-recovery-key",
        "--key-provider",
        url,
    ])
}

/// The format version in a backing file's header.
fn header_version(p: &Path) -> u16 {
    let b = fs::read(p).unwrap();
    u16::from_le_bytes([b[8], b[9]])
}

fn version_states(f: &Fixture, key: &str) -> Vec<(u64, String)> {
    let list = f.key_list();
    let k = list
        .iter()
        .find(|k| k["name"] == key)
        .unwrap_or_else(|| panic!("no key {key} in {list:?}"));
    k["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_u64().unwrap(),
                v["kms_state"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

#[test]
fn kmip_zone_round_trip_roll_reencrypt_prune_and_restart() {
    let k = KmsFixture::new(1);
    let f = &k.f;
    // no zone key material in the keystore: the KMS holds it
    let ks = fs::read_to_string(f.backing.join(".ezfs/keystore.json")).unwrap();
    assert!(
        !ks.contains("\"sealed\""),
        "the keystore holds key material: {ks}"
    );
    assert_eq!(version_states(f, "k1"), vec![(1, "Active".into())]);
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    {
        let _m = f.mount();
        let z = f.zone("z", "k1");
        fs::write(z.join("a"), &data).unwrap();
        fs::write(z.join("small"), b"hello kms").unwrap();
        assert_eq!(fs::read(z.join("a")).unwrap(), data);
        fs::write(f.m("plain"), b"outside").unwrap();
        // a zone whose names are encrypted: its name secret is wrapped by the KMS
        let n = f.names_zone("n", "k1");
        fs::write(n.join("a secret name"), b"named").unwrap();
        // status shows the KMS side (the pool fills in the background)
        let o = f.run(&["status", "--json", f.mnt.to_str().unwrap()]);
        ok(&o, "status");
        let st = stdout_of(&o).replace([' ', '\n'], "");
        assert!(
            st.contains("\"pooled_edeks\":") && st.contains("\"reachable\":true"),
            "{st}"
        );
    }
    assert_eq!(
        header_version(&f.b("z/a")),
        2,
        "a KMS zone's files have version 2 headers"
    );
    // a restart of the daemon, cold: every DEK comes from the KMS again
    let before = k.audit_count("op=UNWRAP key=k1@1");
    {
        let _m = f.mount();
        drop_caches();
        assert_eq!(fs::read(f.m("z/a")).unwrap(), data);
        assert_eq!(fs::read(f.m("z/small")).unwrap(), b"hello kms");
        assert_eq!(fs::read(f.m("n/a secret name")).unwrap(), b"named");
        assert!(k.audit_count("op=UNWRAP key=k1@1") > before, "{}", k.audit());
        assert!(k.audit_count("op=UNWRAP_NAMES key=k1@1") > 0, "{}", k.audit());
        // roll: new files use version 2, old ones still read
        ok(&f.key("roll", "k1"), "key roll");
        fs::write(f.m("z/new"), b"after the roll").unwrap();
        assert_eq!(fs::read(f.m("z/a")).unwrap(), data);
    }
    let raw = fs::read(f.b("z/new")).unwrap();
    assert_eq!(
        u32::from_le_bytes(raw[48..52].try_into().unwrap()),
        2,
        "the new file uses k1@2"
    );
    {
        let _m = f.mount();
        for z in ["z", "n"] {
            let o = f.run(&["zone", "reencrypt", "--json", f.m(z).to_str().unwrap()]);
            ok(&o, &format!("zone reencrypt {z}"));
        }
        ok(&f.key("prune", "k1"), "key prune");
        drop_caches();
        assert_eq!(fs::read(f.m("z/a")).unwrap(), data);
        assert_eq!(fs::read(f.m("z/new")).unwrap(), b"after the roll");
        assert_eq!(fs::read(f.m("n/a secret name")).unwrap(), b"named");
    }
    // fsck unwraps through the KMS: every header and block checks out
    let o = f.run(&[
        "fsck",
        f.backing.to_str().unwrap(),
        "--passphrase-file",
        f.pass.to_str().unwrap(),
    ]);
    ok(&o, "fsck of a backing dir whose keys are in the KMS");
    assert!(
        stdout_of(&o).contains("2 zone(s), 4 file(s)"),
        "fsck checked the zones' files: {}",
        stdout_of(&o)
    );
    // the pruned version is gone from the KMS, not just from the keystore
    assert_eq!(version_states(f, "k1"), vec![(2, "Active".into())]);
    let client =
        ezfs::keys::kmip::KmipClient::new(ezfs::keys::kmip::KmipConfig::parse(&k.url).unwrap()).unwrap();
    assert!(
        client.locate("ezfs/k1/1").unwrap().is_empty(),
        "k1@1 is still in the KMS"
    );
    assert_eq!(client.locate("ezfs/k1/2").unwrap().len(), 1);
    let audit = k.audit();
    for needle in [
        "op=CREATE key=k1@1 uid=0",
        "op=ROLL key=k1@2",
        "op=PRUNE key=k1 uid=0",
        "op=DESTROY key=k1@1",
        "op=GENERATE key=k1@1",
        "op=WRAP key=k1@2",
        "result=ok",
    ] {
        assert!(audit.contains(needle), "audit log lacks {needle}:\n{audit}");
    }
    let mode = fs::metadata(f.backing.join(".ezfs/audit.log"))
        .unwrap()
        .permissions();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
    // delete: refused while a zone uses the key; the KMS keeps it
    let o = f.key("delete", "k1");
    assert!(!o.status.success(), "a key in use was deleted");
    assert!(
        k.audit().contains("op=DELETE key=k1 uid=0 pid="),
        "a refused delete is audited too"
    );
    assert!(
        k.audit().contains("result=error:key_'k1'_is_still_used"),
        "{}",
        k.audit()
    );
    assert_eq!(version_states(f, "k1"), vec![(2, "Active".into())]);
}

#[test]
fn a_deleted_kms_key_is_destroyed_there() {
    let k = KmsFixture::new(1);
    let f = &k.f;
    ok(&f.key("create", "k2"), "key create k2");
    ok(&f.key("roll", "k2"), "key roll k2");
    ok(&f.key("delete", "k2"), "key delete k2");
    // the KMS objects are revoked and destroyed (PyKMIP then forgets them entirely):
    // a new key of that name starts afresh rather than adopting them
    let client =
        ezfs::keys::kmip::KmipClient::new(ezfs::keys::kmip::KmipConfig::parse(&k.url).unwrap()).unwrap();
    for v in 1..=2 {
        let left = client.locate(&format!("ezfs/k2/{v}")).unwrap();
        assert!(left.is_empty(), "k2@{v} is still in the KMS: {left:?}");
    }
    ok(&f.key("create", "k2"), "key create k2 again");
    assert_eq!(version_states(f, "k2"), vec![(1, "Active".into())]);
    for needle in ["op=DELETE key=k2 ", "op=DESTROY key=k2@1", "op=DESTROY key=k2@2"] {
        assert!(
            k.audit().contains(needle),
            "audit log lacks {needle}:\n{}",
            k.audit()
        );
    }
}

/// fio's random-write job with verification over `nrfiles` files of which it keeps
/// two open at a time, cycling through the rest: every switch is an open through the
/// KMS. `extra`: e.g. `--verify_only`.
fn fio_verify(dir: &Path, scratch: &Path, extra: &[&str]) -> std::process::Output {
    let d = format!("--directory={}", dir.display());
    let mut args = vec![
        "--name=kmsverify",
        d.as_str(),
        "--size=24M",
        "--nrfiles=48",
        "--openfiles=2",
        "--file_service_type=random",
        "--rw=randwrite",
        "--bs=4k",
        "--numjobs=2",
        "--ioengine=psync",
        "--verify=crc32c",
        "--verify_fatal=1",
        "--randseed=20261203",
        "--group_reporting",
    ];
    args.extend_from_slice(extra);
    run_cmd(Command::new("fio").args(args).current_dir(scratch), scratch)
}

#[test]
fn a_kms_server_killed_mid_run_fails_no_operation() {
    assert!(
        Command::new("fio").arg("--version").output().is_ok(),
        "fio is needed for this test (apt-get install fio; .ci/run installs it)"
    );
    let mut k = KmsFixture::new(2);
    let f = &k.f;
    // no DEK cache: every open of fio's goes to the KMS
    let _m = f.mount_opts(&["--edek-pool", "20", "--dek-cache-ttl", "0"]);
    let z = f.zone("z", "k1");
    let scratch = f.scratch();
    let fio = std::thread::spawn(move || fio_verify(&z, &scratch, &[]));
    // let the job get going, then kill one server for good
    let t0 = Instant::now();
    while k.audit_count("op=UNWRAP") < 20 && t0.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(50));
    }
    k.servers[0].stop();
    let out = fio.join().unwrap();
    ok(&out, "fio verify with one KMS server killed mid-run");
    let audit = k.audit();
    let failed: Vec<&str> = audit.lines().filter(|l| l.contains("result=error")).collect();
    assert!(failed.is_empty(), "KMS operations failed:\n{}", failed.join("\n"));
    assert!(
        k.audit_count("op=UNWRAP") >= 40,
        "too few opens went through the KMS to mean anything:\n{audit}"
    );
    // and again from a cold start, with only the second server left
    drop(_m);
    let _m = f.mount_opts(&["--dek-cache-ttl", "0"]);
    drop_caches();
    ok(
        &fio_verify(&f.m("z"), &f.scratch(), &["--verify_only"]),
        "fio verify after a remount with one server",
    );
}

#[test]
fn a_kms_outage_fails_new_opens_only_and_heals_by_itself() {
    let mut k = KmsFixture::new(1);
    let f = &k.f;
    // no DEK cache: "closed", written here, must need the KMS to be opened again
    let _m = f.mount_opts(&["--edek-pool", "50", "--dek-cache-ttl", "0"]);
    let z = f.zone("z", "k1");
    fs::write(z.join("held"), vec![5u8; 100_000]).unwrap();
    fs::write(z.join("closed"), vec![6u8; 10_000]).unwrap();
    fs::write(f.m("plain"), b"plain").unwrap();
    // the pool fills in the background
    let t0 = Instant::now();
    while pooled(f) < 40 {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the EDEK pool did not fill"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let held = fs::File::open(z.join("held")).unwrap();
    drop_caches();
    k.servers[0].stop();
    // an open file keeps reading (its DEK is in memory), plain files are untouched
    let mut b = vec![0u8; 4096];
    held.read_exact_at(&mut b, 50_000).unwrap();
    assert!(b.iter().all(|&x| x == 5));
    assert_eq!(fs::read(f.m("plain")).unwrap(), b"plain");
    fs::write(f.m("plain2"), b"still").unwrap();
    // creates go on from the pool
    for i in 0..10 {
        fs::write(z.join(format!("new{i}")), format!("made during the outage {i}")).unwrap();
    }
    // a file whose DEK is not in memory: EIO, within a bounded time
    let t = Instant::now();
    let e = fs::read(z.join("closed")).expect_err("read a file with the KMS down");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    assert!(
        t.elapsed() < Duration::from_secs(60),
        "the open took {:?}",
        t.elapsed()
    );
    // the KMS comes back: everything works without a remount
    k.servers[0].restart();
    let t = Instant::now();
    loop {
        match fs::read(z.join("closed")) {
            Ok(d) => {
                assert_eq!(d, vec![6u8; 10_000]);
                break;
            }
            Err(e) => assert!(
                t.elapsed() < Duration::from_secs(120),
                "no recovery after the KMS came back: {e}"
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    for i in 0..10 {
        assert_eq!(
            fs::read_to_string(z.join(format!("new{i}"))).unwrap(),
            format!("made during the outage {i}")
        );
    }
}

/// Rewrites a version 2 header's EDEK (and its length) in the backing file `p`.
fn put_edek(p: &Path, edek: &[u8]) {
    let mut b = fs::read(p).unwrap();
    let name_len = b[52] as usize;
    let id_at = 53 + name_len;
    let id_len = b[id_at] as usize;
    let len_at = id_at + 1 + id_len;
    let old_len = u16::from_le_bytes([b[len_at], b[len_at + 1]]) as usize;
    let mac: Vec<u8> = b[len_at + 2 + old_len..len_at + 2 + old_len + 32].to_vec();
    for x in &mut b[len_at..4096] {
        *x = 0;
    }
    b[len_at..len_at + 2].copy_from_slice(&(edek.len() as u16).to_le_bytes());
    b[len_at + 2..len_at + 2 + edek.len()].copy_from_slice(edek);
    b[len_at + 2 + edek.len()..len_at + 2 + edek.len() + 32].copy_from_slice(&mac);
    fs::OpenOptions::new()
        .write(true)
        .open(p)
        .unwrap()
        .write_all_at(&b[..4096], 0)
        .unwrap();
}

fn kms_key_id(p: &Path) -> String {
    let b = fs::read(p).unwrap();
    let id_at = 53 + b[52] as usize;
    String::from_utf8(b[id_at + 1..id_at + 1 + b[id_at] as usize].to_vec()).unwrap()
}

#[test]
fn tampered_edeks_and_wrong_kms_answers_give_eio_never_wrong_plaintext() {
    let k = KmsFixture::new(1);
    let f = &k.f;
    {
        let _m = f.mount();
        let z = f.zone("z", "k1");
        for n in ["flipped", "short", "otherdek", "wrongid"] {
            fs::write(z.join(n), format!("secret {n}")).unwrap();
        }
    }
    let client =
        ezfs::keys::kmip::KmipClient::new(ezfs::keys::kmip::KmipConfig::parse(&k.url).unwrap()).unwrap();
    let id = kms_key_id(&f.b("z/flipped"));
    let aad = b"ezfs dek k1@1";
    // a flipped EDEK byte: the KMS refuses it
    let mut b = fs::read(f.b("z/flipped")).unwrap();
    let id_at = 53 + b[52] as usize;
    let edek_at = id_at + 1 + b[id_at] as usize + 2;
    b[edek_at + 20] ^= 1;
    fs::write(f.b("z/flipped"), &b).unwrap();
    // the KMS answers with a 16-byte "key"
    put_edek(&f.b("z/short"), &client.encrypt(&id, aad, &[9u8; 16]).unwrap());
    // the KMS answers with a valid but wrong 32-byte key: the header MAC catches it
    put_edek(&f.b("z/otherdek"), &client.encrypt(&id, aad, &[7u8; 32]).unwrap());
    // a header naming another KMS object than k1@1 is refused before any decrypt
    let other = client.create_key("not-an-ezfs-key").unwrap();
    let mut b = fs::read(f.b("z/wrongid")).unwrap();
    let id_at = 53 + b[52] as usize;
    assert_eq!(
        other.len(),
        b[id_at] as usize,
        "uids of the same length (test setup)"
    );
    b[id_at + 1..id_at + 1 + other.len()].copy_from_slice(other.as_bytes());
    fs::write(f.b("z/wrongid"), &b).unwrap();
    let _m = f.mount();
    for n in ["flipped", "short", "otherdek", "wrongid"] {
        let e = fs::read(f.m(&format!("z/{n}"))).expect_err(n);
        assert_eq!(e.raw_os_error(), Some(libc::EIO), "{n}: {e}");
    }
    let audit = k.audit();
    assert!(
        audit.contains("result=error"),
        "failed unwraps are audited:\n{audit}"
    );
}

#[test]
fn concurrent_opens_share_one_unwrap_and_the_dek_cache_is_flushed_by_key_changes() {
    let k = KmsFixture::new(1);
    let f = &k.f;
    {
        let _m = f.mount();
        let z = f.zone("z", "k1");
        fs::write(z.join("f"), vec![1u8; 50_000]).unwrap();
    }
    let unwraps = || k.audit_count("op=UNWRAP key=k1@1");
    {
        let _m = f.mount_opts(&["--dek-cache-ttl", "0"]);
        let p = f.m("z/f");
        let before = unwraps();
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (p, barrier) = (p.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let h = fs::File::open(&p).unwrap();
                    let mut b = [0u8; 10];
                    h.read_exact_at(&mut b, 100).unwrap();
                    // every open is held until all are done
                    barrier.wait();
                    b
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), [1u8; 10]);
        }
        assert_eq!(
            unwraps() - before,
            1,
            "8 concurrent opens made one KMS round trip"
        );
        // without the cache, a reopen after close unwraps again
        wait_closed(f);
        let before = unwraps();
        fs::read(&p).unwrap();
        wait_closed(f);
        fs::read(&p).unwrap();
        assert_eq!(unwraps() - before, 2);
    }
    // the default cache (30 s); and -o dek_cache_ttl= is the flag's other spelling
    let _m = f.mount_opts(&["-o", "dek_cache_ttl=600"]);
    let p = f.m("z/f");
    let before = unwraps();
    for _ in 0..5 {
        fs::read(&p).unwrap();
    }
    assert_eq!(unwraps() - before, 1, "the DEK cache serves reopens");
    // a file created here is read back with no round trip at all
    fs::write(f.m("z/fresh"), b"new").unwrap();
    let before_fresh = unwraps();
    drop_caches();
    assert_eq!(fs::read(f.m("z/fresh")).unwrap(), b"new");
    assert_eq!(unwraps(), before_fresh, "a created file's DEK is cached");
    // a key change (here a grant) empties it
    let o = f.run(&[
        "key",
        "grant",
        "k1",
        "--user",
        "nobody",
        "--backing",
        f.backing.to_str().unwrap(),
        "--passphrase-file",
        f.pass.to_str().unwrap(),
    ]);
    ok(&o, "key grant");
    wait_closed(f);
    fs::read(&p).unwrap();
    assert_eq!(unwraps() - before, 2, "the grant flushed the DEK cache");
    assert!(k.audit().contains("op=GRANT key=k1"), "{}", k.audit());
}

#[test]
fn bad_kmip_settings_are_refused_at_init() {
    let f = Fixture::bare();
    let pki = KmipPki::new(&f.root.join("pki"));
    let cases: Vec<(String, &str)> = vec![
        ("kmip://127.0.0.1:5696".into(), "ca"),
        (
            format!(
                "kmip://127.0.0.1:5696?ca={}&cert=relative.pem&key={}",
                pki.ca.display(),
                pki.client_key.display()
            ),
            "absolute",
        ),
        (
            format!(
                "kmip://127.0.0.1:5696?ca=/nonexistent.pem&cert={}&key={}",
                pki.client_cert.display(),
                pki.client_key.display()
            ),
            "nonexistent",
        ),
    ];
    for (url, needle) in cases {
        let o = init_with(&f, &url);
        assert_eq!(o.status.code(), Some(2), "{url}: {}", stderr_of(&o));
        let err = stderr_of(&o);
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.contains(needle), "{url}: {err}");
        assert!(
            !f.backing.join(".ezfs").exists(),
            "a refused init left .ezfs behind"
        );
    }
}

fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// `cat PATH` as user `uid` (group `uid`, no supplementary groups).
fn cat_as(f: &Fixture, uid: u32, p: &Path) -> std::process::Output {
    let u = uid.to_string();
    run_cmd(
        Command::new("setpriv")
            .args(["--reuid", &u, "--regid", &u, "--clear-groups", "--", "cat"])
            .arg(p),
        &f.scratch(),
    )
}

#[test]
fn key_acls_gate_kms_zones_and_the_audit_log_names_the_opener() {
    let k = KmsFixture::new(1);
    let f = &k.f;
    chmod(&f.root, 0o755); // other users must reach the mountpoint
                           // the default DEK cache is on: a cached DEK must not let anyone past the ACL
    let _m = f.mount_opts(&["--allow-other"]);
    let z = f.zone("z", "k1");
    chmod(&z, 0o777);
    fs::write(z.join("a"), b"secret a").unwrap();
    chmod(&z.join("a"), 0o666);
    assert_eq!(
        fs::read(z.join("a")).unwrap(),
        b"secret a",
        "root reads (and the DEK is cached)"
    );
    let user = 60001;
    let o = cat_as(f, user, &z.join("a"));
    assert!(
        !o.status.success() && stderr_of(&o).contains("Permission denied"),
        "a user without a grant read a KMS zone's file: {}",
        stdout_of(&o)
    );
    let keyc = |sub: &str| {
        f.run(&[
            "key",
            sub,
            "k1",
            "--user",
            "60001",
            "--backing",
            f.backing.to_str().unwrap(),
            "--passphrase-file",
            f.pass.to_str().unwrap(),
        ])
    };
    ok(&keyc("grant"), "key grant");
    wait_closed(f);
    let o = cat_as(f, user, &z.join("a"));
    ok(&o, "cat after the grant");
    assert_eq!(stdout_of(&o), "secret a");
    // the grant emptied the cache: the user's open went to the KMS, and says who
    assert!(
        k.audit()
            .lines()
            .any(|l| l.contains("op=UNWRAP key=k1@1 uid=60001 pid=") && l.contains("result=ok")),
        "{}",
        k.audit()
    );
    ok(&keyc("revoke"), "key revoke");
    let o = cat_as(f, user, &z.join("a"));
    assert!(
        !o.status.success() && stderr_of(&o).contains("Permission denied"),
        "a revoked user still reads: {}",
        stdout_of(&o)
    );
}
