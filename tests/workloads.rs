//! Real workloads through a zone: a tarball of thousands of files extracted and
//! compared with `diff -r`, a git repository with commits, `gc` and `fsck --full`,
//! and SQLite databases written in many transactions and checked with
//! `PRAGMA integrity_check`. Each is checked again after a remount with cold caches,
//! so every byte comes back through decryption. Each runs in a zone that encrypts
//! names too, where every name comes back through decryption. The tools are required: a missing
//! one fails the test with a message saying what to install.

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Output};

/// Fails (never skips) when a tool is missing.
fn require(tool: &str, version_arg: &str) {
    let found = Command::new(tool)
        .arg(version_arg)
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "`{tool}` is needed for this test: apt-get install {tool} (.ci/run installs it)"
    );
}

fn sh_in(f: &Fixture, cwd: &Path, prog: &str, args: &[&str]) -> Output {
    run_cmd(
        Command::new(prog)
            .args(args)
            .current_dir(cwd)
            .env("HOME", f.scratch())
            .env("GIT_CONFIG_NOSYSTEM", "1"),
        &f.scratch(),
    )
}

/// Source tree for the tarball: the C headers every Rust toolchain machine has.
const TREE: &str = "/usr/include";
/// How many regular files the tarball holds (a deterministic subset keeps it quick).
const TREE_FILES: usize = 3000;

/// Writes a tarball of the first `TREE_FILES` regular files of `TREE` (sorted, with
/// their directories) plus every symlink among them, and returns its path.
fn make_tarball(f: &Fixture) -> std::path::PathBuf {
    let out = sh_in(
        f,
        Path::new(TREE),
        "find",
        &[".", "-type", "f", "-o", "-type", "l"],
    );
    ok(&out, "find the source tree");
    let mut names: Vec<String> = stdout_of(&out).lines().map(str::to_owned).collect();
    names.sort();
    assert!(
        names.len() >= TREE_FILES,
        "{TREE} has only {} files; the test wants {TREE_FILES} (apt-get install libc6-dev)",
        names.len()
    );
    names.truncate(TREE_FILES);
    let list = f.scratch().join("files.txt");
    std::fs::write(&list, names.join("\n") + "\n").unwrap();
    let tar = f.scratch().join("tree.tar");
    let (tar_s, list_s) = (tar.to_str().unwrap(), list.to_str().unwrap());
    ok(
        &sh_in(f, Path::new(TREE), "tar", &["-cf", tar_s, "-T", list_s]),
        "tar -c",
    );
    tar
}

fn diff_r(f: &Fixture, a: &Path, b: &Path) {
    let o = run_cmd(
        Command::new("diff")
            .arg("-r")
            .arg("--no-dereference")
            .arg(a)
            .arg(b),
        &f.scratch(),
    );
    ok(&o, &format!("diff -r {} {}", a.display(), b.display()));
}

/// A zone for a workload: plain names, or (`names`) encrypted names too.
fn workload_zone(f: &Fixture, dir: &str, names: bool) -> std::path::PathBuf {
    if names {
        f.names_zone(dir, "k1")
    } else {
        f.zone(dir, "k1")
    }
}

#[test]
fn tarball_of_thousands_of_files_round_trips() {
    tarball_round_trip(false);
}

#[test]
fn tarball_round_trips_in_a_zone_that_encrypts_names() {
    tarball_round_trip(true);
}

fn tarball_round_trip(names: bool) {
    require("tar", "--version");
    require("diff", "--version");
    let f = Fixture::new();
    let tar = make_tarball(&f);
    let tar_s = tar.to_str().unwrap();
    let plain = f.scratch().join("plain");
    std::fs::create_dir(&plain).unwrap();
    ok(
        &sh_in(&f, &plain, "tar", &["-xf", tar_s]),
        "tar -x into a plain dir",
    );
    {
        let _m = f.mount();
        let zone = workload_zone(&f, "z", names);
        ok(&sh_in(&f, &zone, "tar", &["-xf", tar_s]), "tar -x into the zone");
        diff_r(&f, &plain, &zone);
    }
    let _m = f.mount();
    drop_caches();
    diff_r(&f, &plain, &f.m("z"));
    // the tree really is encrypted: some regular file's backing copy starts with the magic
    let first = stdout_of(&sh_in(&f, &plain, "find", &[".", "-type", "f", "-size", "+1k"]))
        .lines()
        .next()
        .expect("a file over 1 KiB")
        .trim_start_matches("./")
        .to_owned();
    if names {
        // no name of the tree is in the backing dir, so no path there to look at
        assert!(
            !f.b("z").join(&first).exists(),
            "z/{first} is stored under its name"
        );
        return;
    }
    assert_eq!(
        &f.raw(&format!("z/{first}"))[..8],
        MAGIC,
        "z/{first} is not encrypted"
    );
}

fn git(f: &Fixture, repo: &Path, args: &[&str]) -> Output {
    let mut all = vec![
        "-c",
        "user.name=ezfs test",
        "-c",
        "user.email=test@ezfs.invalid",
        "-c",
        "init.defaultBranch=main",
    ];
    all.extend_from_slice(args);
    let o = sh_in(f, repo, "git", &all);
    ok(&o, &format!("git {args:?}"));
    o
}

#[test]
fn git_repository_in_a_zone_passes_fsck() {
    git_repository(false);
}

#[test]
fn git_repository_in_a_zone_that_encrypts_names_passes_fsck() {
    git_repository(true);
}

fn git_repository(names: bool) {
    require("git", "--version");
    let f = Fixture::new();
    let mut rng = Rng::new(5);
    let head;
    {
        let _m = f.mount();
        let repo = workload_zone(&f, "repo", names);
        git(&f, &repo, &["init", "-q"]);
        for c in 0..8 {
            for i in 0..20 {
                let len = 100 + rng.below(20_000) as usize;
                let text: String = rng.bytes(len).iter().map(|b| (b'a' + b % 26) as char).collect();
                std::fs::create_dir_all(repo.join(format!("d{}", i % 4))).unwrap();
                std::fs::write(repo.join(format!("d{}/f{i}.txt", i % 4)), text).unwrap();
            }
            if c % 3 == 2 {
                std::fs::remove_file(repo.join(format!("d1/f{}.txt", 1 + 4 * (c % 4)))).unwrap();
            }
            git(&f, &repo, &["add", "-A"]);
            git(&f, &repo, &["commit", "-q", "-m", &format!("commit {c}")]);
        }
        git(&f, &repo, &["gc", "-q", "--aggressive", "--prune=now"]);
        git(&f, &repo, &["fsck", "--full", "--strict"]);
        head = stdout_of(&git(&f, &repo, &["rev-parse", "HEAD"]));
        let log = stdout_of(&git(&f, &repo, &["log", "--oneline"]));
        assert_eq!(log.lines().count(), 8, "git log: {log}");
    }
    let _m = f.mount();
    drop_caches();
    let repo = f.m("repo");
    git(&f, &repo, &["fsck", "--full", "--strict"]);
    assert_eq!(stdout_of(&git(&f, &repo, &["rev-parse", "HEAD"])), head);
    // the working tree matches the last commit
    let status = stdout_of(&git(&f, &repo, &["status", "--porcelain"]));
    assert!(status.is_empty(), "working tree differs from HEAD: {status}");
    if names {
        assert!(!f.b("repo/.git").exists(), ".git is stored under its name");
        return;
    }
    // the packfile is encrypted in the backing dir
    let pack_dir = f.b("repo/.git/objects/pack");
    let pack = std::fs::read_dir(&pack_dir)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(".pack"))
        .expect("git gc wrote a pack");
    assert_eq!(&std::fs::read(pack.path()).unwrap()[..8], MAGIC);
}

fn sqlite(f: &Fixture, db: &Path, sql: &str) -> String {
    let script = f.scratch().join("script.sql");
    std::fs::write(&script, sql).unwrap();
    let o = run_cmd(
        Command::new("sqlite3")
            .arg("-bail")
            .arg(db)
            .arg(format!(".read {}", script.display())),
        &f.scratch(),
    );
    ok(&o, &format!("sqlite3 {}", db.display()));
    stdout_of(&o)
}

/// 300 transactions of inserts, updates and deletes; the SQL is deterministic, so a
/// plain-dir database given the same script must hold the same rows.
fn workload(journal: &str) -> String {
    let mut rng = Rng::new(7);
    let mut s = format!(
        "PRAGMA journal_mode={journal};\nPRAGMA synchronous=FULL;\nCREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, n INTEGER);\nCREATE INDEX t_n ON t(n);\n"
    );
    for tx in 0..300 {
        s += "BEGIN;\n";
        for _ in 0..10 {
            let id = rng.below(2000);
            let len = 1 + rng.below(3000);
            s += &format!(
                "INSERT OR REPLACE INTO t VALUES({id}, hex(randomblob({len})), {});\n",
                rng.below(1000)
            );
        }
        s += &format!("UPDATE t SET n = n + 1 WHERE id % 7 = {};\n", tx % 7);
        if tx % 10 == 9 {
            s += &format!("DELETE FROM t WHERE n % 13 = {};\n", tx % 13);
        }
        s += "COMMIT;\n";
    }
    s
}

const CHECK: &str = "PRAGMA integrity_check;\nSELECT count(*), sum(n), sum(length(v)) FROM t;\n";

#[test]
fn sqlite_databases_in_a_zone_pass_integrity_check() {
    sqlite_databases(false);
}

#[test]
fn sqlite_databases_in_a_zone_that_encrypts_names_pass_integrity_check() {
    sqlite_databases(true);
}

fn sqlite_databases(names: bool) {
    require("sqlite3", "--version");
    let f = Fixture::new();
    let mut summaries = Vec::new();
    {
        let _m = f.mount();
        let zone = workload_zone(&f, "db", names);
        for journal in ["DELETE", "WAL"] {
            let db = zone.join(format!("{journal}.db"));
            sqlite(&f, &db, &workload(journal));
            let out = sqlite(&f, &db, CHECK);
            assert!(out.starts_with("ok\n"), "{journal}: integrity_check says: {out}");
            summaries.push(out);
        }
        // `randomblob` differs between runs, so compare what does not depend on it
        assert_eq!(
            summaries[0].lines().nth(1).unwrap().split('|').next(),
            summaries[1].lines().nth(1).unwrap().split('|').next()
        );
    }
    let _m = f.mount();
    drop_caches();
    for (journal, before) in ["DELETE", "WAL"].iter().zip(&summaries) {
        let out = sqlite(&f, &f.m(&format!("db/{journal}.db")), CHECK);
        assert_eq!(&out, before, "{journal}: database changed across the remount");
    }
    if names {
        assert!(
            !f.b("db/DELETE.db").exists(),
            "DELETE.db is stored under its name"
        );
    } else {
        assert_eq!(&f.raw("db/DELETE.db")[..8], MAGIC);
    }
}
