//! Shared storage (`--shared-storage`): several daemons serve one backing dir, as
//! daemons on several hosts serve one backing dir on a shared file system. Here they
//! are several mounts of one local backing dir (the GlusterFS tests put each daemon
//! on its own client of a replicated volume). Writers through different mounts must
//! never tear a block or lose a write, applications' locks must exclude each other
//! across mounts, and a killed daemon's locks must die with it.

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

const PYTHON: &str = "/usr/bin/python3";

/// `n` shared mounts of one backing dir with a zone `z` (key `k1`): the fixture's
/// mountpoint, then `root/m2`, `root/m3`, ...
fn mounts(f: &Fixture, n: usize) -> Vec<Mount> {
    let mut out = vec![f.mount_opts(&["--shared-storage"])];
    for i in 2..=n {
        let mnt = f.root.join(format!("m{i}"));
        std::fs::create_dir_all(&mnt).unwrap();
        match f.try_mount_at(&mnt, &[], &f.pass) {
            Ok(m) => out.push(m),
            Err((c, msg)) => panic!("mount {i} failed (exit {c:?}): {msg}"),
        }
    }
    out
}

fn py(f: &Fixture, script: &str, args: &[&str]) -> std::process::Child {
    Command::new(PYTHON)
        .arg("-c")
        .arg(script)
        .args(args)
        .current_dir(f.scratch())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs")
}

/// The first line `c` prints (it says it holds what it was started to hold).
fn first_line(c: &mut std::process::Child) -> String {
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(c.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    line.trim().to_owned()
}

fn done(c: std::process::Child, what: &str) -> Output {
    let o = c.wait_with_output().unwrap();
    ok(&o, what);
    o
}

fn fsck_clean(f: &Fixture) {
    let o = f.run(&[
        "fsck",
        f.backing.to_str().unwrap(),
        "--passphrase-file",
        f.pass.to_str().unwrap(),
    ]);
    ok(&o, "fsck after the workload");
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Writes bytes [lo, hi) of each of `blocks` blocks, `rounds` times, with the byte
/// `base + round % 2`, each round synced.
const NEIGHBOURS: &str = r#"
import os, sys
path, lo, hi, base, rounds, blocks = sys.argv[1], *map(int, sys.argv[2:])
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
for r in range(rounds):
    for b in range(blocks):
        os.pwrite(fd, bytes([base + r % 2]) * (hi - lo), b * 4096 + lo)
    os.fsync(fd)
os.close(fd)
"#;

#[test]
fn neighbouring_bytes_written_through_three_mounts_are_all_kept() {
    let f = Fixture::new();
    let ms = mounts(&f, 3);
    let z = f.zone("z", "k1");
    std::fs::write(z.join("f"), vec![0u8; 16 * 4096]).unwrap();
    // (b) three writers of adjacent sub-block ranges of the same 16 blocks, and
    // (a) a fourth writing whole disjoint ranges of another file
    let (rounds, blocks) = ("150", "16");
    let writers: Vec<_> = ms
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let (lo, hi, base) = (
                (i * 100).to_string(),
                (i * 100 + 100).to_string(),
                (65 + i * 4).to_string(),
            );
            py(
                &f,
                NEIGHBOURS,
                &[s(&m.mnt.join("z/f")), &lo, &hi, &base, rounds, blocks],
            )
        })
        .collect();
    let disjoint = py(
        &f,
        "import os,sys\nfd=os.open(sys.argv[1],os.O_RDWR|os.O_CREAT,0o644)\n\
         for r in range(40):\n    for b in range(64):\n        os.pwrite(fd, bytes([b % 250 + 1]) * 8192, b * 8192)\n\
         os.close(fd)",
        &[s(&ms[1].mnt.join("z/g"))],
    );
    for w in writers {
        done(w, "a neighbouring writer");
    }
    done(disjoint, "the disjoint writer");
    // read back through a mount none of them wrote last
    let data = std::fs::read(ms[2].mnt.join("z/f")).unwrap();
    assert_eq!(data.len(), 16 * 4096);
    for b in 0..16 {
        for i in 0..3 {
            let last = (65 + i * 4 + 1) as u8; // round 149 is odd
            let at = b * 4096 + i * 100;
            assert!(
                data[at..at + 100].iter().all(|&x| x == last),
                "block {b}: writer {i}'s last bytes are lost: {:?}",
                &data[at..at + 4]
            );
        }
    }
    let g = std::fs::read(ms[0].mnt.join("z/g")).unwrap();
    for b in 0..64 {
        assert!(g[b * 8192..(b + 1) * 8192]
            .iter()
            .all(|&x| x == (b % 250 + 1) as u8));
    }
    drop(ms);
    fsck_clean(&f);
}

#[test]
fn a_daemon_of_its_own_never_runs_beside_another() {
    let f = Fixture::new();
    let m2 = f.root.join("m2");
    std::fs::create_dir(&m2).unwrap();
    // a mount of its own first: a shared one beside it is refused (and vice versa)
    let own = f.mount();
    let (c, msg) = f
        .try_mount_at(&m2, &["--shared-storage"], &f.pass)
        .err()
        .expect("a shared mount beside a daemon of its own");
    assert_eq!(c, Some(1));
    assert!(msg.contains("does not share it"), "{msg}");
    assert!(
        !f.b(".ezfs/shared-storage").exists(),
        "nothing recorded by a refused mount"
    );
    own.unmount();
    // once shared, every mount of the backing dir is shared, flag or not
    let first = f.mount_opts(&["--shared-storage"]);
    assert!(f.b(".ezfs/shared-storage").exists());
    let second = f
        .try_mount_at(&m2, &[], &f.pass)
        .expect("a second mount of shared storage");
    assert!(
        wait_until(Duration::from_secs(10), || second
            .log()
            .contains("recorded as shared storage")),
        "{}",
        second.log()
    );
    // both serve the same files
    std::fs::write(f.m("hello"), b"from one").unwrap();
    assert_eq!(std::fs::read(m2.join("hello")).unwrap(), b"from one");
    drop(second);
    drop(first);
}

#[test]
fn flock_guarded_appends_and_renames_under_readers_across_mounts() {
    let f = Fixture::new();
    let ms = mounts(&f, 2);
    let z = f.zone("z", "k1");
    std::fs::write(z.join("log"), b"").unwrap();
    // (c) appends under flock, each record whole, from both mounts
    let append = r#"
import fcntl, os, sys
path, who, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
for i in range(n):
    with open(path, "ab") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(("%s %05d " % (who, i)).encode().ljust(63, b".") + b"\n")
        f.flush()
        fcntl.flock(f, fcntl.LOCK_UN)
"#;
    let a = py(&f, append, &[s(&ms[0].mnt.join("z/log")), "A", "300"]);
    let b = py(&f, append, &[s(&ms[1].mnt.join("z/log")), "B", "300"]);
    // (d) one mount renames and replaces a file while the other reads it
    std::fs::write(z.join("r"), vec![b'x'; 50_000]).unwrap();
    let renamer = py(
        &f,
        "import os,sys\nd=sys.argv[1]\nfor i in range(300):\n    os.rename(d+'/r', d+'/r2')\n    os.rename(d+'/r2', d+'/r')\n    \
         if i % 10 == 0:\n        open(d+'/r.new','wb').write(bytes([120 + i % 3]) * 50000)\n        os.rename(d+'/r.new', d+'/r')",
        &[s(&ms[0].mnt.join("z"))],
    );
    let reader = py(
        &f,
        "import errno,sys\nok=0\nfor i in range(1500):\n    try:\n        d=open(sys.argv[1],'rb').read()\n    except FileNotFoundError:\n        continue\n    \
         assert len(d) in (0, 50000), len(d)\n    assert len(set(d)) <= 1, 'mixed bytes'\n    ok+=1\nprint(ok)",
        &[s(&ms[1].mnt.join("z/r"))],
    );
    done(a, "appender A");
    done(b, "appender B");
    done(renamer, "renamer");
    let o = done(reader, "reader (no EIO, no torn contents)");
    assert!(
        stdout_of(&o).trim().parse::<u32>().unwrap() > 0,
        "the reader read something"
    );
    let log = std::fs::read(ms[1].mnt.join("z/log")).unwrap();
    assert_eq!(log.len(), 600 * 64, "every append is there");
    let mut seen = std::collections::HashSet::new();
    for rec in log.chunks(64) {
        assert!(
            rec.ends_with(b".\n") && (rec[0] == b'A' || rec[0] == b'B'),
            "torn record {rec:?}"
        );
        assert!(seen.insert(rec.to_vec()), "a record twice");
    }
    drop(ms);
    fsck_clean(&f);
}

#[test]
fn a_killed_daemons_locks_die_with_it() {
    let f = Fixture::new();
    let ms = mounts(&f, 2);
    let z = f.zone("z", "k1");
    std::fs::write(z.join("db"), b"data").unwrap();
    // a process holds a write lock through the first mount (and keeps the file open)
    let holder = py(
        &f,
        "import fcntl,sys,time\nf=open(sys.argv[1],'r+b')\nfcntl.lockf(f, fcntl.LOCK_EX, 0, 0)\nprint('locked', flush=True)\ntime.sleep(600)",
        &[s(&ms[0].mnt.join("z/db"))],
    );
    let mut holder = holder;
    assert_eq!(first_line(&mut holder), "locked");
    let try_lock = "import fcntl,sys\nf=open(sys.argv[1],'r+b')\ntry:\n    fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB, 0, 0)\n    print('got')\nexcept OSError:\n    print('busy')";
    let o = done(py(&f, try_lock, &[s(&ms[1].mnt.join("z/db"))]), "lock attempt");
    assert_eq!(
        stdout_of(&o).trim(),
        "busy",
        "the lock is seen through the other mount"
    );
    // the first daemon dies: its descriptions close, its locks with them
    let pid = ms[0].pid().expect("daemon pid");
    // SAFETY: kill(2) of a pid this test started (through ezfs mount).
    unsafe { libc::kill(pid, libc::SIGKILL) };
    assert!(wait_until(Duration::from_secs(30), || !process_alive(pid)));
    let o = done(py(&f, try_lock, &[s(&ms[1].mnt.join("z/db"))]), "lock attempt");
    assert_eq!(stdout_of(&o).trim(), "got", "the dead daemon's lock is gone");
    // and the other mount carries on writing
    std::fs::write(ms[1].mnt.join("z/after"), b"still here").unwrap();
    assert_eq!(std::fs::read(ms[1].mnt.join("z/after")).unwrap(), b"still here");
    let _ = holder.kill();
    let _ = holder.wait();
}

#[test]
fn sqlite_transactions_from_two_mounts_are_all_kept() {
    let f = Fixture::new();
    let ms = mounts(&f, 2);
    f.zone("z", "k1");
    let setup =
        "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\nc.execute('PRAGMA journal_mode=DELETE')\n\
                 c.execute('CREATE TABLE t (who TEXT, n INTEGER, pad BLOB)')\nc.commit()";
    done(
        py(&f, setup, &[s(&ms[0].mnt.join("z/db.sqlite"))]),
        "create the database",
    );
    let work = r#"
import sqlite3, sys, time
db, who, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = sqlite3.connect(db, timeout=120, isolation_level=None)
c.execute("PRAGMA journal_mode=DELETE")
for i in range(n):
    while True:
        try:
            c.execute("BEGIN IMMEDIATE")
            total = c.execute("SELECT count(*) FROM t").fetchone()[0]
            c.execute("INSERT INTO t VALUES (?, ?, randomblob(?))", (who, i, 200 + total % 3000))
            c.execute("COMMIT")
            break
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) and "busy" not in str(e):
                raise
            try:
                c.execute("ROLLBACK")
            except sqlite3.OperationalError:
                pass
            time.sleep(0.01)
"#;
    let a = py(&f, work, &[s(&ms[0].mnt.join("z/db.sqlite")), "A", "150"]);
    let b = py(&f, work, &[s(&ms[1].mnt.join("z/db.sqlite")), "B", "150"]);
    done(a, "writer A");
    done(b, "writer B");
    let check = "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\n\
                 print(c.execute('PRAGMA integrity_check').fetchone()[0])\n\
                 print(c.execute('SELECT count(*), count(DISTINCT who || n) FROM t').fetchone())";
    for m in &ms {
        let o = done(py(&f, check, &[s(&m.mnt.join("z/db.sqlite"))]), "integrity check");
        let out = stdout_of(&o);
        assert_eq!(out.lines().collect::<Vec<_>>(), ["ok", "(300, 300)"], "{out}");
    }
    drop(ms);
    fsck_clean(&f);
}

#[test]
fn one_reencrypt_job_per_zone_across_mounts_and_a_dead_hosts_job_is_taken_over() {
    let f = Fixture::new();
    let ms = mounts(&f, 2);
    let z = f.zone("z", "k1");
    for i in 0..20 {
        std::fs::write(z.join(format!("f{i}")), vec![i as u8; 10_000]).unwrap();
    }
    ok(&f.key("roll", "k1"), "key roll");
    let zdir = s(&z).to_owned();
    let z2 = ms[1].mnt.join("z");
    ok(&f.run(&["zone", "reencrypt", &zdir]), "a first job");
    let records = f.b(".ezfs/reencrypt.json");
    let mut all: serde_json::Value = serde_json::from_slice(&std::fs::read(&records).unwrap()).unwrap();
    let id = all.as_object().unwrap().keys().next().unwrap().clone();
    // another host's job is running: its record says so and it holds the job lock
    all[&id]["state"] = "running".into();
    std::fs::write(&records, serde_json::to_vec(&all).unwrap()).unwrap();
    let lock = f.b(&format!(".ezfs/job-{id}.lock"));
    let mut holder = py(
        &f,
        "import fcntl,sys,time\nf=open(sys.argv[1],'a+')\nfcntl.lockf(f, fcntl.LOCK_EX, 1, 0)\nprint('held', flush=True)\ntime.sleep(600)",
        &[s(&lock)],
    );
    assert_eq!(first_line(&mut holder), "held");
    let status = |dir: &Path| {
        let o = f.run(&["zone", "reencrypt", "--status", "--json", s(dir)]);
        ok(&o, "zone reencrypt --status");
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v[0]["state"].as_str().unwrap().to_owned()
    };
    assert_eq!(status(&z), "running", "seen from the first mount");
    assert_eq!(status(&z2), "running", "seen from the second mount");
    for dir in [&z, &z2] {
        let o = f.run(&["zone", "reencrypt", s(dir)]);
        assert_eq!(o.status.code(), Some(1), "a second job of the zone started");
        assert!(stderr_of(&o).contains("another host"), "{}", stderr_of(&o));
    }
    // the other host dies: its lock goes, the job shows as interrupted and is taken over
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(status(&z2), "interrupted");
    ok(&f.run(&["zone", "reencrypt", s(&z2)]), "the job taken over");
    assert_eq!(status(&z), "completed");
}

#[test]
fn a_record_left_by_a_killed_daemon_does_not_make_shared_daemons_distrusted() {
    let f = Fixture::new();
    // a daemon of its own records itself in .ezfs/daemon.json; kill -9 leaves the record
    let own = f.mount();
    let pid = own.pid().expect("daemon pid");
    // SAFETY: kill(2) of the daemon this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    assert!(wait_until(Duration::from_secs(30), || !process_alive(pid)));
    drop(own);
    assert!(
        f.b(".ezfs/daemon.json").exists(),
        "the killed daemon's record stays"
    );
    // shared daemons keep no record: commands must still trust their sockets
    let ms = mounts(&f, 2);
    std::fs::create_dir(ms[0].mnt.join("zz")).unwrap();
    let o = f.run(&["zone", "create", "--key", "k1", s(&ms[1].mnt.join("zz"))]);
    ok(&o, "zone create through the second shared mount");
    let o = f.run(&["status", s(&ms[0].mnt)]);
    ok(&o, "ezfs status of the first shared mount");
}

#[test]
fn mmap_works_on_shared_storage_files() {
    let f = Fixture::new();
    let ms = mounts(&f, 2);
    f.zone("z", "k1");
    let o = done(
        py(
            &f,
            "import mmap,os,sys\nfd=os.open(sys.argv[1],os.O_RDWR|os.O_CREAT,0o644)\nos.ftruncate(fd,8192)\n\
             m=mmap.mmap(fd,8192)\nm[100:105]=b'hello'\nm.flush()\nm.close()\nos.close(fd)\n\
             print(open(sys.argv[2],'rb').read()[100:105].decode())",
            &[s(&ms[0].mnt.join("z/mm")), s(&ms[1].mnt.join("z/mm"))],
        ),
        "mmap through one mount, read through the other",
    );
    assert_eq!(stdout_of(&o).trim(), "hello");
}
