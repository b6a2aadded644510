//! More files than the daemon keeps descriptors for: with `EZFS_INODE_FDS=200`, a
//! tree of 3,000 files is written, listed, read back and renamed through the mount
//! while the daemon's descriptor count stays bounded (idle inodes' descriptors are
//! closed and reopened by file handle).

mod common;

use common::*;
use std::fs;

const BUDGET: usize = 200;

fn fd_count(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn a_tree_larger_than_the_descriptor_budget() {
    std::env::set_var("EZFS_INODE_FDS", BUDGET.to_string());
    let f = Fixture::new();
    let m = f.mount();
    let pid = m.pid().expect("daemon pid");
    f.zone("z", "k1");
    fs::create_dir(f.m("plain")).unwrap();
    let content = |d: usize, i: usize| format!("file {d}/{i}\n").repeat(1 + i % 5);
    let mut peak = 0;
    for top in ["z", "plain"] {
        for d in 0..15 {
            let dir = f.m(&format!("{top}/d{d}"));
            fs::create_dir(&dir).unwrap();
            for i in 0..100 {
                fs::write(dir.join(format!("f{i}")), content(d, i)).unwrap();
            }
            peak = peak.max(fd_count(pid));
        }
    }
    // everything again, through fresh lookups: descriptors closed long ago are reopened
    drop_caches();
    for top in ["z", "plain"] {
        for d in 0..15 {
            for i in 0..100 {
                let p = f.m(&format!("{top}/d{d}/f{i}"));
                let got = fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                assert_eq!(got, content(d, i), "{}", p.display());
            }
            peak = peak.max(fd_count(pid));
        }
    }
    // renames and stats of inodes whose descriptors were closed
    for i in 0..100 {
        fs::rename(f.m(&format!("z/d0/f{i}")), f.m(&format!("z/d1/moved{i}"))).unwrap();
    }
    for i in 0..100 {
        let p = f.m(&format!("z/d1/moved{i}"));
        assert_eq!(fs::read_to_string(&p).unwrap(), content(0, i));
        assert_eq!(fs::metadata(&p).unwrap().len(), content(0, i).len() as u64);
    }
    peak = peak.max(fd_count(pid));
    // the budget plus what is not an inode descriptor (FUSE, sockets, logs, open files)
    assert!(
        peak <= BUDGET + 40,
        "the daemon held {peak} descriptors with a budget of {BUDGET} for 3,000+ inodes"
    );
    assert!(
        peak > BUDGET / 2,
        "peak {peak}: the test did not reach the budget"
    );
    m.unmount();
}
