//! Reference-model test of the filesystem core: random sequences of namespace and
//! data operations are applied to a `Core` (no kernel) and to a small in-memory model
//! of what a POSIX filesystem with zone boundaries must do; after every step the
//! result of the operation (success or errno) and the whole visible tree (every
//! directory's names, every file's contents) must agree.

use super::{fixture, root, Fixture, ROOT};
use ezfs::fs::SetAttr;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::ffi::OsStr;
/// The directories of the model: (path, zone). `z1/sub` is inside zone 1, whose
/// names are encrypted.
const DIRS: [(&str, Option<u8>); 4] = [
    ("plain", None),
    ("z1", Some(1)),
    ("z1/sub", Some(1)),
    ("z2", Some(2)),
];
const NAMES: [&str; 3] = ["a", "b", "c"];

#[derive(Debug, Clone)]
enum Op {
    Create {
        dir: usize,
        name: usize,
    },
    Write {
        file: usize,
        off: u64,
        len: usize,
        seed: u8,
    },
    Truncate {
        file: usize,
        size: u64,
    },
    Rename {
        file: usize,
        dir: usize,
        name: usize,
    },
    Link {
        file: usize,
        dir: usize,
        name: usize,
    },
    Unlink {
        file: usize,
    },
}

/// Offsets mostly in the first blocks, sometimes around the first group boundary
/// (512 KiB of plaintext: where the codec's metadata block sits).
fn offset() -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => 0u64..12_288,
        1 => (512 * 1024 - 6000u64)..(512 * 1024 + 6000),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let dir = 0..DIRS.len();
    let name = 0..NAMES.len();
    prop_oneof![
        3 => (dir.clone(), name.clone()).prop_map(|(dir, name)| Op::Create { dir, name }),
        4 => (any::<usize>(), offset(), 0usize..9000, any::<u8>())
            .prop_map(|(file, off, len, seed)| Op::Write { file, off, len, seed }),
        1 => (any::<usize>(), offset()).prop_map(|(file, size)| Op::Truncate { file, size }),
        2 => (any::<usize>(), dir.clone(), name.clone()).prop_map(|(file, dir, name)| Op::Rename { file, dir, name }),
        1 => (any::<usize>(), dir, name).prop_map(|(file, dir, name)| Op::Link { file, dir, name }),
        1 => any::<usize>().prop_map(|file| Op::Unlink { file }),
    ]
}

/// What the filesystem must show: names to file ids, file ids to contents.
#[derive(Default)]
struct Model {
    names: BTreeMap<(usize, usize), u32>,
    files: BTreeMap<u32, Vec<u8>>,
    next: u32,
}

impl Model {
    /// The `i`th existing name (modulo their number).
    fn pick(&self, i: usize) -> Option<(usize, usize)> {
        (!self.names.is_empty()).then(|| *self.names.keys().nth(i % self.names.len()).unwrap())
    }
}

struct Real {
    f: Fixture,
    /// Node id of each directory of `DIRS`.
    dirs: Vec<u64>,
}

fn setup() -> Real {
    let f = fixture(false);
    let core = &f.core;
    let mut dirs = Vec::new();
    for (path, zone) in DIRS {
        let (parent, leaf) = match path.rsplit_once('/') {
            Some((p, l)) => (dirs[DIRS.iter().position(|d| d.0 == p).unwrap()], l),
            None => (ROOT, path),
        };
        dirs.push(
            core.mkdir(&root(), parent, OsStr::new(leaf), 0o755, 0)
                .unwrap()
                .ino,
        );
        if let (Some(z), None) = (zone, path.find('/')) {
            // zone 1 encrypts its names (and has a subdirectory), zone 2 does not
            core.zone_create(path, &format!("k{z}"), z == 1, &root()).unwrap();
        }
    }
    Real { f, dirs }
}

fn errno<T>(r: Result<T, ezfs::fs::FsError>) -> Result<T, i32> {
    r.map_err(|e| e.errno())
}

impl Real {
    fn ino(&self, (d, n): (usize, usize)) -> u64 {
        self.f
            .core
            .lookup(self.dirs[d], OsStr::new(NAMES[n]))
            .unwrap()
            .ino
    }

    fn read_all(&self, ino: u64) -> Vec<u8> {
        let o = self.f.core.open(&root(), ino, libc::O_RDONLY).unwrap();
        let mut out = Vec::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = self.f.core.read(o.fh, out.len() as u64, &mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        self.f.core.release(ino, o.fh);
        out
    }

    fn listing(&self, d: usize) -> Vec<String> {
        let fh = self.f.core.opendir(self.dirs[d]).unwrap();
        let mut out = Vec::new();
        self.f
            .core
            .readdir(self.dirs[d], fh, 0, &mut |e, _| {
                out.push(e.name.to_string_lossy().into_owned());
                false
            })
            .unwrap();
        self.f.core.releasedir(fh);
        out.retain(|n| n != "." && n != ".." && !DIRS.iter().any(|(p, _)| p.ends_with(&format!("/{n}"))));
        out.sort();
        out
    }
}

/// Applies `op` to the model; the result the filesystem must give.
fn apply_model(m: &mut Model, op: &Op) -> Result<(), i32> {
    let zone = |d: usize| DIRS[d].1;
    match *op {
        Op::Create { dir, name } => {
            if m.names.contains_key(&(dir, name)) {
                return Ok(()); // skipped: the kernel would open the existing file
            }
            m.next += 1;
            m.names.insert((dir, name), m.next);
            m.files.insert(m.next, Vec::new());
        }
        Op::Write { file, off, len, seed } => {
            let Some(at) = m.pick(file) else { return Ok(()) };
            let data = m.files.get_mut(&m.names[&at]).unwrap();
            let end = off as usize + len;
            if data.len() < end {
                data.resize(end, 0);
            }
            for (i, b) in data[off as usize..end].iter_mut().enumerate() {
                *b = seed.wrapping_add(i as u8);
            }
        }
        Op::Truncate { file, size } => {
            let Some(at) = m.pick(file) else { return Ok(()) };
            m.files.get_mut(&m.names[&at]).unwrap().resize(size as usize, 0);
        }
        Op::Rename { file, dir, name } => {
            let Some(from) = m.pick(file) else { return Ok(()) };
            if zone(from.0) != zone(dir) {
                return Err(libc::EXDEV);
            }
            let id = m.names[&from];
            if m.names.get(&(dir, name)) == Some(&id) {
                return Ok(()); // two names of one file: rename does nothing
            }
            m.names.remove(&from);
            if let Some(old) = m.names.insert((dir, name), id) {
                if !m.names.values().any(|&v| v == old) {
                    m.files.remove(&old);
                }
            }
        }
        Op::Link { file, dir, name } => {
            let Some(from) = m.pick(file) else { return Ok(()) };
            if m.names.contains_key(&(dir, name)) {
                return Ok(()); // skipped: the kernel answers EEXIST itself
            }
            if zone(from.0) != zone(dir) {
                return Err(libc::EXDEV);
            }
            let id = m.names[&from];
            m.names.insert((dir, name), id);
        }
        Op::Unlink { file } => {
            let Some(at) = m.pick(file) else { return Ok(()) };
            let id = m.names.remove(&at).unwrap();
            if !m.names.values().any(|&v| v == id) {
                m.files.remove(&id);
            }
        }
    }
    Ok(())
}

/// Applies `op` to the core, choosing files as the model does (before the model
/// changes).
fn apply_real(r: &Real, m: &Model, op: &Op) -> Result<(), i32> {
    let c = &r.f.core;
    let n = |i: usize| OsStr::new(NAMES[i]);
    match *op {
        Op::Create { dir, name } => {
            if m.names.contains_key(&(dir, name)) {
                return Ok(());
            }
            let (attr, o) = errno(c.create(&root(), r.dirs[dir], n(name), 0o644, 0, libc::O_RDWR))?;
            c.release(attr.ino, o.fh);
        }
        Op::Write { file, off, len, seed } => {
            let Some(at) = m.pick(file) else { return Ok(()) };
            let ino = r.ino(at);
            let data: Vec<u8> = (0..len).map(|i| seed.wrapping_add(i as u8)).collect();
            let o = errno(c.open(&root(), ino, libc::O_RDWR))?;
            let w = errno(c.write(ino, o.fh, off, &data, false, false));
            c.release(ino, o.fh);
            assert_eq!(w?, len);
        }
        Op::Truncate { file, size } => {
            let Some(at) = m.pick(file) else { return Ok(()) };
            let s = SetAttr {
                size: Some(size),
                ..SetAttr::default()
            };
            errno(c.setattr(&root(), r.ino(at), &s))?;
        }
        Op::Rename { file, dir, name } => {
            let Some(from) = m.pick(file) else { return Ok(()) };
            errno(c.rename(r.dirs[from.0], n(from.1), r.dirs[dir], n(name), 0))?;
        }
        Op::Link { file, dir, name } => {
            let Some(from) = m.pick(file) else { return Ok(()) };
            if m.names.contains_key(&(dir, name)) {
                return Ok(());
            }
            errno(c.link(r.ino(from), r.dirs[dir], n(name)))?;
        }
        Op::Unlink { file } => {
            let Some(at) = m.pick(file) else { return Ok(()) };
            errno(c.unlink(r.dirs[at.0], n(at.1)))?;
        }
    }
    Ok(())
}

/// The whole visible tree agrees with the model.
fn check(r: &Real, m: &Model) -> Result<(), TestCaseError> {
    for (d, (path, _)) in DIRS.iter().enumerate() {
        let want: Vec<String> = m
            .names
            .keys()
            .filter(|(dd, _)| *dd == d)
            .map(|(_, n)| NAMES[*n].to_string())
            .collect();
        prop_assert_eq!(r.listing(d), want, "listing of {}", path);
    }
    for (&at, id) in &m.names {
        let got = r.read_all(r.ino(at));
        let want = &m.files[id];
        prop_assert!(
            got == *want,
            "{}/{}: {} bytes read, {} expected",
            DIRS[at.0].0,
            NAMES[at.1],
            got.len(),
            want.len()
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn core_matches_the_model(ops in proptest::collection::vec(op(), 1..30)) {
        let real = setup();
        let mut model = Model::default();
        for op in &ops {
            let got = apply_real(&real, &model, op);
            let want = apply_model(&mut model, op);
            prop_assert_eq!(got, want, "{:?}", op);
            check(&real, &model)?;
        }
    }
}
