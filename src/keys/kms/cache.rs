//! Unwrapped DEKs of recently created or opened files, kept for a short time (30 s
//! unless the mount says otherwise; zero turns it off) so that reopening a file does
//! not cost a KMS round trip. A cached DEK outlives the KMS's say on it (a key revoked
//! in the KMS alone) by up to the TTL; every change of the key state made through ezfs
//! (grant, revoke, roll, delete) empties the cache at once.

use crate::crypto::Key;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A bounded map from (key id, EDEK) to the DEK, with a time to live.
pub struct DekCache {
    ttl: Duration,
    max: usize,
    map: Mutex<HashMap<[u8; 32], (Key, Instant)>>,
}

/// The cache key: a hash, so no EDEK bytes are kept twice.
fn slot(key_id: &str, edek: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((key_id.len() as u32).to_le_bytes());
    h.update(key_id.as_bytes());
    h.update(edek);
    h.finalize().into()
}

impl DekCache {
    /// A cache keeping at most `max` DEKs for `ttl` each (zero `ttl`: keeps nothing).
    pub fn new(ttl: Duration, max: usize) -> DekCache {
        DekCache {
            ttl,
            max,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// The DEK of `edek` under `key_id`, if cached and not expired.
    pub fn get(&self, key_id: &str, edek: &[u8]) -> Option<Key> {
        if self.ttl.is_zero() {
            return None;
        }
        let mut m = self.map.lock();
        let k = slot(key_id, edek);
        match m.get(&k) {
            Some((dek, at)) if at.elapsed() < self.ttl => Key::from_slice(dek.expose()),
            Some(_) => {
                m.remove(&k);
                None
            }
            None => None,
        }
    }

    /// Keeps `dek`, dropping expired entries (and, when full, the oldest) first.
    pub fn put(&self, key_id: &str, edek: &[u8], dek: &Key) {
        if self.ttl.is_zero() || self.max == 0 {
            return;
        }
        let mut m = self.map.lock();
        if m.len() >= self.max {
            m.retain(|_, (_, at)| at.elapsed() < self.ttl);
        }
        if m.len() >= self.max {
            if let Some(oldest) = m.iter().min_by_key(|(_, (_, at))| *at).map(|(k, _)| *k) {
                m.remove(&oldest);
            }
        }
        if let Some(copy) = Key::from_slice(dek.expose()) {
            m.insert(slot(key_id, edek), (copy, Instant::now()));
        }
    }

    /// Forgets every DEK.
    pub fn clear(&self) {
        self.map.lock().clear();
    }

    /// DEKs held now (expired ones included until they are dropped).
    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    /// Whether no DEK is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_bounded_and_expiring() {
        let dek = Key::random();
        let off = DekCache::new(Duration::ZERO, 10);
        off.put("1", b"e", &dek);
        assert!(off.get("1", b"e").is_none());

        let c = DekCache::new(Duration::from_millis(300), 2);
        c.put("1", b"a", &dek);
        assert_eq!(c.get("1", b"a").unwrap(), dek);
        assert!(c.get("2", b"a").is_none(), "another key id is another entry");
        c.put("1", b"b", &Key::random());
        c.put("1", b"c", &Key::random());
        assert_eq!(c.len(), 2, "bounded");
        assert!(c.get("1", b"a").is_none(), "the oldest went first");
        std::thread::sleep(Duration::from_millis(400));
        assert!(c.get("1", b"c").is_none(), "expired");
        c.put("1", b"d", &dek);
        c.clear();
        assert!(c.is_empty());
    }
}
