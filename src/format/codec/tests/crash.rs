//! Crash images: random writes, truncates, syncs and header re-wraps applied to the
//! codec on a [`CrashBackend`], then crashes that keep a random part of what was not
//! synced (see `format::crash` for the model). The file is re-opened as the filesystem
//! opens it (header decoded and unwrapped, plaintext size from the backing length) and
//! read block by block against a model that keeps, per block, every content it had
//! since the last sync.

use super::*;
use crate::format::crash::{CrashBackend, SECTOR};
use crate::format::header::Header;
use crate::format::layout::plain_size;
use proptest::sample::Index;

const ZONE_ID: [u8; 16] = [0x3c; 16];
const FILE_ID: [u8; 16] = [0x5a; 16];
/// The longest key name a header holds: the re-wrap must still be one sector.
fn key_name() -> String {
    "k".repeat(255)
}

/// The file's data key (fixed, so that a failing case replays the same way).
fn dek() -> Key {
    Key::from_slice(&[0x21; 32]).unwrap()
}

/// The zone key's version `version`.
fn zone_key(version: u32) -> Key {
    Key::from_slice(&[version as u8 ^ 0x80; 32]).unwrap()
}

/// The file's header with the DEK wrapped by zone-key version `version`, as a new file
/// or a re-wrap (see `fs::rekey`) makes it.
fn header(version: u32) -> Header {
    let aad = Header::aad(&FILE_ID, &ZONE_ID, &key_name(), version);
    Header {
        file_id: FILE_ID,
        zone_id: ZONE_ID,
        key_name: key_name(),
        key_version: version,
        edek: zone_key(version).cipher().wrap_key(&aad, &dek()).to_vec(),
        kms: None,
    }
}

/// Re-wraps the file's DEK with `version` as `fs::rekey` does: one write of the new
/// header's first sector, which holds all of its meaningful bytes.
fn rewrap(b: &CrashBackend, version: u32) {
    let h = header(version);
    assert!(h.used_len() <= SECTOR as usize);
    b.write_at(&h.encode()[..SECTOR as usize], 0).unwrap();
}

/// A new file as the filesystem creates it: its header, written and synced.
fn new_file(direct: bool) -> CrashBackend {
    let b = CrashBackend::new(header(1).encode().to_vec());
    if direct {
        b.writing_direct()
    } else {
        b
    }
}

/// Opens a crashed file as the filesystem does: the header decoded and its EDEK
/// unwrapped with the zone-key version it names, the size from the backing length.
fn reopen(b: &CrashBackend) -> Result<(Header, BlockCodec, u64), String> {
    let mut h = [0u8; HEADER_LEN as usize];
    let n = b.read_at(&mut h, 0).map_err(|e| e.to_string())?;
    let header = Header::decode(&h[..n]).map_err(|e| format!("header: {e}"))?;
    let key = zone_key(header.key_version)
        .cipher()
        .unwrap_key(&header.own_aad(), &header.edek)
        .map_err(|_| format!("the EDEK of version {} does not unwrap", header.key_version))?;
    if key != dek() {
        return Err("the header unwraps to another DEK".into());
    }
    let len = b.len().map_err(|e| e.to_string())?;
    let size = plain_size(len).map_err(|_| format!("backing length {len}"))?;
    Ok((header.clone(), BlockCodec::new(&key, header.file_id), size))
}

// ---------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------

/// The plaintext of block `i` of `plain`; `None` past its end.
fn block_of(plain: &[u8], i: u64) -> Option<Vec<u8>> {
    let size = plain.len() as u64;
    (i < block_count(size)).then(|| plain[(i * BLOCK) as usize..][..block_len(i, size) as usize].to_vec())
}

/// What the file may hold after a crash.
#[derive(Debug, Default)]
struct Model {
    plain: Vec<u8>,
    /// Per block, every content it had since the last sync, the synced one first
    /// (`None`: past the end of the file).
    history: Vec<Vec<Option<Vec<u8>>>>,
    /// Per block, whether an operation since the last sync wrote it, cut it or changed
    /// its length.
    touched: Vec<bool>,
    /// The key versions of the header since the last sync, the synced one first.
    versions: Vec<u32>,
}

impl Model {
    fn new() -> Model {
        Model {
            versions: vec![1],
            ..Model::default()
        }
    }

    fn sync(&mut self) {
        let blocks = block_count(self.plain.len() as u64);
        self.history = (0..blocks).map(|i| vec![block_of(&self.plain, i)]).collect();
        self.touched = vec![false; blocks as usize];
        self.versions = vec![*self.versions.last().unwrap()];
    }

    /// Records the blocks an operation changed from `old` to the current plaintext,
    /// and the blocks `covered` it wrote even where their content stays the same.
    fn changed(&mut self, old: &[u8], covered: Range<u64>) {
        let blocks = block_count(old.len().max(self.plain.len()) as u64);
        for i in 0..blocks {
            let new = block_of(&self.plain, i);
            if !covered.contains(&i) && block_of(old, i) == new {
                continue;
            }
            if self.history.len() <= i as usize {
                // past the end at the last sync, untouched since
                self.history.resize(i as usize + 1, vec![None]);
                self.touched.resize(i as usize + 1, false);
            }
            self.history[i as usize].push(new);
            self.touched[i as usize] = true;
        }
    }

    /// The contents block `i` had since the last sync, and whether it was touched.
    fn block(&self, i: u64) -> (&[Option<Vec<u8>>], bool) {
        const ABSENT: &[Option<Vec<u8>>] = &[None];
        match self.history.get(i as usize) {
            Some(h) => (h, self.touched[i as usize]),
            None => (ABSENT, false),
        }
    }
}

// ---------------------------------------------------------------------------------
// Operations and crashes
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    /// Writes `len` pseudo-random bytes (from `seed`) at `off`.
    Write { off: u64, len: usize, seed: u64 },
    /// Truncates to an absolute size.
    Truncate(u64),
    /// Truncates to the current size plus `delta` (clamped at 0).
    TruncateBy(i64),
    /// `fdatasync`, or `fsync` without `data_only`.
    Sync { data_only: bool },
    /// Re-wraps the DEK with the next zone-key version.
    Rewrap,
}

/// Which pending sector writes a crash keeps.
#[derive(Debug, Clone)]
enum Keep {
    All,
    None,
    /// The first ones, in the order they were written (writeback in order).
    Prefix(Index),
    /// Each with a chance of `percent` in 100, drawn from `seed`.
    Some {
        percent: u8,
        seed: u64,
    },
}

/// A crash: the sector writes it keeps, and how many length changes.
#[derive(Debug, Clone)]
struct Crash {
    keep: Keep,
    lengths: Index,
}

impl Crash {
    /// Which of `n` pending sector writes it keeps.
    fn kept(&self, n: usize) -> Vec<bool> {
        match self.keep {
            Keep::All => vec![true; n],
            Keep::None => vec![false; n],
            Keep::Prefix(at) => {
                let k = at.index(n + 1);
                (0..n).map(|i| i < k).collect()
            }
            Keep::Some { percent, seed } => (0..n)
                .map(|i| bytes(seed ^ i as u64, 1)[0] as u32 * 100 < percent as u32 * 256)
                .collect(),
        }
    }
}

/// Offsets within 3 groups: mostly in the first blocks or near a block or group
/// boundary, some anywhere.
fn offset() -> BoxedStrategy<u64> {
    let edges = vec![BLOCK, 127 * BLOCK, G, 129 * BLOCK, 2 * G];
    prop_oneof![
        3 => 0..4 * BLOCK,
        3 => (prop::sample::select(edges), -6000i64..6000).prop_map(|(e, d)| e.saturating_add_signed(d)),
        1 => 0..2 * G + 4 * BLOCK,
    ]
    .boxed()
}

/// Lengths: mostly small or around a block, some up to 17 blocks.
fn length() -> BoxedStrategy<usize> {
    let bs = BLOCK as usize;
    prop_oneof![
        3 => 1..64usize,
        3 => 1..9000usize,
        1 => prop::sample::select(vec![bs - 1, bs, bs + 1, 2 * bs]),
        1 => 1..70_000usize,
    ]
    .boxed()
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (offset(), length(), any::<u64>()).prop_map(|(off, len, seed)| Op::Write { off, len, seed }),
        1 => offset().prop_map(Op::Truncate),
        2 => (-20_000i64..20_000).prop_map(Op::TruncateBy),
        3 => any::<bool>().prop_map(|data_only| Op::Sync { data_only }),
        1 => Just(Op::Rewrap),
    ]
}

fn crash() -> impl Strategy<Value = Crash> {
    let keep = prop_oneof![
        1 => Just(Keep::All),
        1 => Just(Keep::None),
        2 => any::<Index>().prop_map(Keep::Prefix),
        4 => (1u8..100, any::<u64>()).prop_map(|(percent, seed)| Keep::Some { percent, seed }),
    ];
    (keep, any::<Index>()).prop_map(|(keep, lengths)| Crash { keep, lengths })
}

// ---------------------------------------------------------------------------------
// Running and checking
// ---------------------------------------------------------------------------------

/// Applies `ops` to a new file and to the model; returns both.
fn run(ops: &[Op], direct: bool) -> Result<(BlockCodec, CrashBackend, Model), TestCaseError> {
    let c = BlockCodec::new(&dek(), FILE_ID);
    let b = new_file(direct);
    let mut m = Model::new();
    for (step, op) in ops.iter().enumerate() {
        let fail = |e: CodecError| TestCaseError::fail(format!("step {step} {op:?}: {e}"));
        let size = m.plain.len() as u64;
        let old = m.plain.clone();
        match *op {
            Op::Write { off, len, seed } => {
                let data = bytes(seed, len);
                let new_size = c.write(&b, size, off, &data).map_err(fail)?;
                let end = off as usize + len;
                if m.plain.len() < end {
                    m.plain.resize(end, 0);
                }
                m.plain[off as usize..end].copy_from_slice(&data);
                prop_assert_eq!(new_size, m.plain.len() as u64);
                let (first, last) = blocks_covering(off, len as u64);
                m.changed(&old, first..last + 1);
            }
            Op::Truncate(_) | Op::TruncateBy(_) => {
                let new_size = match *op {
                    Op::Truncate(n) => n,
                    Op::TruncateBy(d) => size.saturating_add_signed(d),
                    _ => unreachable!(),
                };
                c.truncate(&b, size, new_size).map_err(fail)?;
                m.plain.resize(new_size as usize, 0);
                m.changed(&old, 0..0);
            }
            Op::Sync { data_only } => {
                b.sync(data_only).unwrap();
                m.sync();
            }
            Op::Rewrap => {
                let version = m.versions.last().unwrap() + 1;
                rewrap(&b, version);
                m.versions.push(version);
            }
        }
    }
    Ok((c, b, m))
}

fn is_zero(b: &[u8]) -> bool {
    b.iter().all(|&x| x == 0)
}

/// Crashes `b` as `crash` says and checks what a re-open finds against `m`: a header
/// of a version the file had since the last sync, wrapping its DEK; every block as it
/// was at the last sync or after a later change, or failing authentication, and only
/// if it was changed since the last sync; `verify` listing exactly the blocks that
/// fail. Then grows the file by `grow` bytes, which must read as zeros.
fn check_crash(b: &CrashBackend, m: &Model, crash: &Crash, grow: u64) -> Result<(), TestCaseError> {
    let kept = crash.kept(b.pending_sectors());
    let lengths = crash.lengths.index(b.pending_lengths() + 1);
    let after = b.crash(|i| kept[i], lengths);
    let (header, c, size) = reopen(&after).map_err(TestCaseError::fail)?;
    prop_assert!(
        m.versions.contains(&header.key_version),
        "the header names version {}, the file had {:?}",
        header.key_version,
        m.versions
    );
    let mut bad = Vec::new();
    for i in 0..block_count(size).max(m.history.len() as u64) {
        let (history, touched) = m.block(i);
        let what = || {
            format!(
                "block {i} (touched {touched}, {} contents since sync)",
                history.len()
            )
        };
        if i >= block_count(size) {
            // the crash dropped it: only a block changed since the last sync may go
            prop_assert!(touched || history[0].is_none(), "{} is gone", what());
            continue;
        }
        let len = block_len(i, size) as usize;
        match read_range(&c, &after, size, i * BLOCK, len) {
            Ok(got) => {
                let was = history.iter().any(|h| h.as_deref() == Some(&got[..]));
                // a hole, or past the end, reads as zeros at any length
                let hole = is_zero(&got) && history.iter().any(|h| h.as_deref().is_none_or(is_zero));
                prop_assert!(was || hole, "{} reads plaintext it never had", what());
                if !touched {
                    prop_assert_eq!(Some(got), history[0].clone(), "{} was synced", what());
                }
            }
            Err(CodecError::Corrupt { block }) => {
                prop_assert_eq!(block, i);
                prop_assert!(touched, "{} was synced and not written since, yet fails", what());
                bad.push(i);
            }
            Err(e) => return Err(TestCaseError::fail(format!("{}: {e}", what()))),
        }
    }
    prop_assert_eq!(&c.verify(&after, size).unwrap(), &bad);
    prop_assert_eq!(BlockCodec::bad_padding(&after, size).unwrap(), Vec::<u64>::new());

    // growing the crashed file reads zeros past its old end (its last block, if short
    // and damaged, cannot grow: truncate then fails, as reading it does)
    // as the filesystem does before it writes a file it opened
    c.clear_entries_past_end(&after, size).unwrap();
    let grown = size + grow;
    if size % BLOCK != 0 && bad.last() == Some(&(size / BLOCK)) {
        prop_assert!(c.truncate(&after, size, grown).is_err());
        return Ok(());
    }
    c.truncate(&after, size, grown)
        .map_err(|e| TestCaseError::fail(format!("growing {size} -> {grown}: {e}")))?;
    for i in block_count(size)..block_count(grown) {
        let got = read_range(&c, &after, grown, i * BLOCK, block_len(i, grown) as usize)
            .map_err(|e| TestCaseError::fail(format!("after growing {size} -> {grown}: {e}")))?;
        prop_assert!(is_zero(&got), "block {i} after growing {size} -> {grown}");
    }
    Ok(())
}

proptest! {
    #![proptest_config(cases(96))]

    /// Random operations, then crashes that keep any part of what was not synced.
    #[test]
    fn crash_images_hold_only_what_the_file_held(
        ops in prop::collection::vec(op(), 1..24),
        crashes in prop::collection::vec(crash(), 1..4),
        grow in prop_oneof![1..2 * BLOCK, 1..2 * G],
        direct in any::<bool>(),
    ) {
        let (_, b, m) = run(&ops, direct)?;
        for crash in &crashes {
            check_crash(&b, &m, crash, grow)?;
        }
    }
}

/// Re-wrapping the header is one sector write: after a crash the header holds the old
/// EDEK or the new one, and the data decrypts either way.
#[test]
fn a_rewrap_is_atomic() {
    let c = BlockCodec::new(&dek(), FILE_ID);
    let b = new_file(false);
    let data = bytes(21, 3 * BLOCK as usize + 5);
    let size = c.write(&b, 0, 0, &data).unwrap();
    b.sync(true).unwrap();
    rewrap(&b, 2);
    assert_eq!((b.pending_sectors(), b.pending_lengths()), (1, 0));
    for (keep, version) in [(false, 1), (true, 2)] {
        let after = b.crash(|_| keep, 0);
        let (header, c, got_size) = reopen(&after).unwrap();
        assert_eq!((header.key_version, got_size), (version, size));
        assert_eq!(read_all(&c, &after, size).unwrap(), data);
    }
}
