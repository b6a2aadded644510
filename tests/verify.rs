//! fio's own data verification through a zone: random writes of mixed sizes from
//! several jobs, checked by fio right after writing and again after a remount with
//! cold caches (so every byte comes back through decryption from the backing dir).

mod common;

use common::*;
use std::process::Command;

fn fio(f: &Fixture, dir: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let d = format!("--directory={}", dir.display());
    let mut args = vec![
        "--name=verify",
        d.as_str(),
        "--size=16M",
        "--rw=randwrite",
        "--bsrange=512-64k",
        "--numjobs=3",
        "--ioengine=psync",
        "--verify=crc32c",
        "--verify_fatal=1",
        "--randseed=20261128",
        "--group_reporting",
    ];
    args.extend_from_slice(extra);
    // fio leaves verify state files in its working directory: keep them in the fixture
    run_cmd(
        Command::new("fio").args(&args).current_dir(f.scratch()),
        &f.scratch(),
    )
}

#[test]
fn fio_verify_survives_remount() {
    assert!(
        Command::new("fio").arg("--version").output().is_ok(),
        "fio is needed for this test (apt-get install fio; .ci/run installs it)"
    );
    let f = Fixture::new();
    {
        let _m = f.mount();
        let zone = f.zone("z", "k1");
        ok(&fio(&f, &zone, &[]), "fio write + verify");
    }
    let _m = f.mount();
    drop_caches();
    ok(
        &fio(&f, &f.m("z"), &["--verify_only"]),
        "fio verify after remount",
    );
    // and the files really are encrypted in the backing dir
    let raw = f.raw("z/verify.0.0");
    assert_eq!(&raw[..8], b"EZFSENC\0");
}
