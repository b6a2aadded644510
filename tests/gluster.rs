//! Shared storage on a real distributed file system: a GlusterFS replica volume on
//! two local bricks, mounted twice (two clients stand in for two hosts), each ezfs
//! daemon on its own client. The test starts `glusterd` if it is not running (and
//! stops it again), makes the volume on a tmpfs, and removes everything at the end.
//! It is skipped, saying why, where GlusterFS cannot start (no hostname that
//! resolves); a missing GlusterFS package fails it (`.ci/run` installs it).

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const PYTHON: &str = "/usr/bin/python3";

fn run(prog: &str, args: &[&str]) -> Output {
    Command::new(prog)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{prog}: {e} (apt-get install glusterfs-server glusterfs-client)"))
}

fn gluster(args: &[&str]) -> Output {
    let mut all = vec!["--mode=script"];
    all.extend_from_slice(args);
    run("gluster", &all)
}

/// A replica-2 volume on a tmpfs, mounted at two client mount points.
struct Volume {
    name: String,
    bricks: PathBuf,
    clients: [PathBuf; 2],
    /// We started glusterd: stop it at the end.
    started: bool,
}

impl Volume {
    /// Starts what is needed; `Err` says why GlusterFS cannot run here.
    fn start(dir: &Path) -> Result<Volume, String> {
        let host = String::from_utf8_lossy(&run("hostname", &[]).stdout)
            .trim()
            .to_owned();
        if std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), 24007)).is_err() {
            return Err(format!("the hostname '{host}' does not resolve"));
        }
        let running = run("pgrep", &["-x", "glusterd"]).status.success();
        if !running {
            let o = run("glusterd", &[]);
            if !o.status.success() {
                return Err(format!("glusterd does not start: {}", stderr_of(&o)));
            }
        }
        let mut v = Volume {
            name: format!("ezfs{}", std::process::id()),
            bricks: dir.join("bricks"),
            clients: [dir.join("c1"), dir.join("c2")],
            started: !running,
        };
        if !wait_until(Duration::from_secs(60), || {
            gluster(&["volume", "list"]).status.success()
        }) {
            return Err("glusterd does not answer".into());
        }
        std::fs::create_dir_all(&v.bricks).unwrap();
        ok(
            &run(
                "mount",
                &[
                    "-t",
                    "tmpfs",
                    "-o",
                    "size=256m",
                    "tmpfs",
                    v.bricks.to_str().unwrap(),
                ],
            ),
            "mount a tmpfs for the bricks",
        );
        let brick = |n: &str| format!("{host}:{}", v.bricks.join(n).display());
        let (b1, b2) = (brick("b1"), brick("b2"));
        let name = v.name.clone();
        ok(
            &gluster(&["volume", "create", &name, "replica", "2", &b1, &b2, "force"]),
            "gluster volume create",
        );
        ok(&gluster(&["volume", "start", &name]), "gluster volume start");
        for c in &mut v.clients {
            std::fs::create_dir_all(&*c).unwrap();
            let src = format!("{host}:/{name}");
            let o = run(
                "mount",
                &[
                    "-t",
                    "glusterfs",
                    "-o",
                    "entry-timeout=0,attribute-timeout=0,negative-timeout=0",
                    &src,
                    c.to_str().unwrap(),
                ],
            );
            ok(&o, "mount the volume");
        }
        Ok(v)
    }

    /// Turns the client caches that hide other clients' writes off.
    fn caches_off(&self) {
        for opt in [
            "performance.write-behind",
            "performance.quick-read",
            "performance.open-behind",
            "performance.stat-prefetch",
            "performance.io-cache",
            "performance.read-ahead",
            "performance.readdir-ahead",
        ] {
            ok(&gluster(&["volume", "set", &self.name, opt, "off"]), opt);
        }
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        for c in &self.clients {
            if run("umount", &[c.to_str().unwrap()]).status.code() != Some(0) {
                let _ = run("umount", &["-l", c.to_str().unwrap()]);
            }
        }
        let _ = gluster(&["volume", "stop", &self.name, "force"]);
        let _ = gluster(&["volume", "delete", &self.name]);
        let _ = run("umount", &["-l", self.bricks.to_str().unwrap()]);
        if self.started {
            let _ = run("pkill", &["-x", "glusterd"]);
            let _ = run("pkill", &["-x", "glusterfsd"]);
            let _ = run("pkill", &["-f", "glustershd"]);
        }
    }
}

fn py(script: &str, args: &[&Path]) -> std::process::Child {
    Command::new(PYTHON)
        .arg("-c")
        .arg(script)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs")
}

fn done(c: std::process::Child, what: &str) -> Output {
    let o = c.wait_with_output().unwrap();
    ok(&o, what);
    o
}

/// An ezfs mount of `backing` at `mnt` (made), with `extra` arguments.
fn mount(f: &Fixture, backing: &Path, mnt: &Path, extra: &[&str]) -> Result<Mount, (Option<i32>, String)> {
    std::fs::create_dir_all(mnt).unwrap();
    f.try_mount_backing_at(backing, mnt, extra)
}

#[test]
fn two_clients_of_a_gluster_volume_share_one_backing_dir() {
    let f = Fixture::bare();
    let vol = match Volume::start(&f.root) {
        Ok(v) => v,
        Err(why) => {
            eprintln!("SKIPPED: GlusterFS cannot run here: {why}");
            return;
        }
    };
    let [c1, c2] = &vol.clients;
    let init = |b: &Path| {
        std::fs::create_dir(b).unwrap();
        let pw = f.pass.to_str().unwrap();
        ok(
            &f.run(&["init", b.to_str().unwrap(), "--passphrase-file", pw]),
            "init",
        );
        let o = f.run(&[
            "key",
            "create",
            "k1",
            "--backing",
            b.to_str().unwrap(),
            "--passphrase-file",
            pw,
        ]);
        ok(&o, "key create");
    };
    let (e1, e2) = (f.root.join("e1"), f.root.join("e2"));

    // the volume's caches are on (its defaults): the mount says which to turn off
    init(&c1.join("data"));
    let m1 = mount(&f, &c1.join("data"), &e1, &["--shared-storage"]).expect("shared mount");
    assert!(
        wait_until(Duration::from_secs(10), || m1
            .log()
            .contains("performance.write-behind")),
        "no warning about the volume's caches: {}",
        m1.log()
    );
    m1.unmount();
    vol.caches_off();

    // two daemons of their own, one per client (different devices): the second is
    // refused, where it used to lose every write of the first silently
    init(&c1.join("plain"));
    let own = mount(&f, &c1.join("plain"), &e1, &[]).expect("a daemon of its own");
    let (code, msg) = mount(&f, &c2.join("plain"), &e2, &[])
        .err()
        .expect("a second daemon of its own");
    assert_eq!(code, Some(1));
    assert!(msg.contains("already served by another ezfs daemon"), "{msg}");
    own.unmount();

    // shared: one daemon per client
    let m1 = mount(&f, &c1.join("data"), &e1, &["--shared-storage"]).expect("shared mount 1");
    let m2 = mount(&f, &c2.join("data"), &e2, &[]).expect("shared mount 2");
    assert!(!m1.log().contains("caches on"), "{}", m1.log());
    std::fs::create_dir(e1.join("z")).unwrap();
    ok(
        &f.run(&["zone", "create", "--key", "k1", e1.join("z").to_str().unwrap()]),
        "zone create",
    );
    std::fs::write(e1.join("z/f"), vec![0u8; 8 * 4096]).unwrap();

    // neighbouring bytes of the same blocks, from both clients
    let neighbours = "import os,sys\npath,lo,hi,base=sys.argv[1],*map(int,sys.argv[2:])\n\
                      fd=os.open(path,os.O_RDWR)\nfor r in range(12):\n    for b in range(8):\n        \
                      os.pwrite(fd,bytes([base+r%2])*(hi-lo),b*4096+lo)\n    os.fsync(fd)\nos.close(fd)";
    let a = Command::new(PYTHON)
        .args([
            "-c",
            neighbours,
            e1.join("z/f").to_str().unwrap(),
            "0",
            "100",
            "65",
        ])
        .spawn()
        .unwrap();
    let b = Command::new(PYTHON)
        .args([
            "-c",
            neighbours,
            e2.join("z/f").to_str().unwrap(),
            "100",
            "200",
            "97",
        ])
        .spawn()
        .unwrap();
    for (mut c, who) in [(a, "writer 1"), (b, "writer 2")] {
        assert!(c.wait().unwrap().success(), "{who} failed");
    }
    for e in [&e1, &e2] {
        let data = std::fs::read(e.join("z/f")).unwrap();
        for blk in 0..8 {
            let at = blk * 4096;
            assert!(
                data[at..at + 100].iter().all(|&x| x == 66),
                "block {blk}: writer 1 lost"
            );
            assert!(
                data[at + 100..at + 200].iter().all(|&x| x == 98),
                "block {blk}: writer 2 lost"
            );
        }
    }

    // appends under flock from both clients
    let append = "import fcntl,sys\npath,who=sys.argv[1],sys.argv[2]\nfor i in range(60):\n    \
                  with open(path,'ab') as f:\n        fcntl.flock(f,fcntl.LOCK_EX)\n        \
                  f.write(('%s %05d '%(who,i)).encode().ljust(63,b'.')+b'\\n')\n        f.flush()\n";
    std::fs::write(e1.join("z/log"), b"").unwrap();
    let a = Command::new(PYTHON)
        .args(["-c", append, e1.join("z/log").to_str().unwrap(), "A"])
        .spawn()
        .unwrap();
    let b = Command::new(PYTHON)
        .args(["-c", append, e2.join("z/log").to_str().unwrap(), "B"])
        .spawn()
        .unwrap();
    for mut c in [a, b] {
        assert!(c.wait().unwrap().success(), "an appender failed");
    }
    let log = std::fs::read(e2.join("z/log")).unwrap();
    assert_eq!(log.len(), 120 * 64, "every append is there");
    assert!(log.chunks(64).all(|r| r.ends_with(b".\n")), "a torn record");

    // SQLite in rollback-journal mode, one process per client
    let setup =
        "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\nc.execute('PRAGMA journal_mode=DELETE')\n\
                 c.execute('CREATE TABLE t (who TEXT, n INTEGER, pad BLOB)')\nc.commit()";
    done(py(setup, &[&e1.join("z/db")]), "create the database");
    let work = "import sqlite3,sys,time\ndb,who=sys.argv[1],sys.argv[2]\n\
                c=sqlite3.connect(db,timeout=120,isolation_level=None)\nc.execute('PRAGMA journal_mode=DELETE')\n\
                for i in range(30):\n    while True:\n        try:\n            c.execute('BEGIN IMMEDIATE')\n            \
                n=c.execute('SELECT count(*) FROM t').fetchone()[0]\n            \
                c.execute('INSERT INTO t VALUES (?,?,randomblob(?))',(who,i,200+n*37%3000))\n            \
                c.execute('COMMIT')\n            break\n        except sqlite3.OperationalError as e:\n            \
                if 'locked' not in str(e) and 'busy' not in str(e): raise\n            \
                time.sleep(0.01)\n";
    let a = Command::new(PYTHON)
        .args(["-c", work, e1.join("z/db").to_str().unwrap(), "A"])
        .spawn()
        .unwrap();
    let b = Command::new(PYTHON)
        .args(["-c", work, e2.join("z/db").to_str().unwrap(), "B"])
        .spawn()
        .unwrap();
    for mut c in [a, b] {
        assert!(c.wait().unwrap().success(), "a SQLite writer failed");
    }
    let check = "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\n\
                 print(c.execute('PRAGMA integrity_check').fetchone()[0])\n\
                 print(c.execute('SELECT count(*) FROM t').fetchone()[0])";
    for e in [&e1, &e2] {
        let o = done(py(check, &[&e.join("z/db")]), "integrity check");
        assert_eq!(
            stdout_of(&o).lines().collect::<Vec<_>>(),
            ["ok", "60"],
            "{}",
            stdout_of(&o)
        );
    }

    // a daemon killed with kill -9 while a process holds a lock through it
    let mut holder = py(
        "import fcntl,sys,time\nf=open(sys.argv[1],'r+b')\nfcntl.lockf(f,fcntl.LOCK_EX,0,0)\nprint('locked',flush=True)\ntime.sleep(600)",
        &[&e1.join("z/f")],
    );
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "locked");
    let try_lock = "import fcntl,sys\nf=open(sys.argv[1],'r+b')\ntry:\n    fcntl.lockf(f,fcntl.LOCK_EX|fcntl.LOCK_NB,0,0)\n    print('got')\nexcept OSError:\n    print('busy')";
    let o = done(py(try_lock, &[&e2.join("z/f")]), "lock attempt");
    assert_eq!(stdout_of(&o).trim(), "busy");
    let pid = m1.pid().expect("daemon pid");
    // SAFETY: kill(2) of the daemon this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    assert!(wait_until(Duration::from_secs(30), || !process_alive(pid)));
    let freed = wait_until(Duration::from_secs(60), || {
        let o = done(py(try_lock, &[&e2.join("z/f")]), "lock attempt");
        stdout_of(&o).trim() == "got"
    });
    assert!(freed, "the killed daemon's lock outlived it");
    let _ = holder.kill();
    let _ = holder.wait();
    drop(m1);
    m2.unmount();
    let o = f.run(&[
        "fsck",
        c2.join("data").to_str().unwrap(),
        "--passphrase-file",
        f.pass.to_str().unwrap(),
    ]);
    ok(&o, "fsck");
}
