//! The EDEK pool: fresh (DEK, EDEK) pairs made ahead of time per key version, so a
//! create in a KMS zone takes one from memory instead of waiting for the KMS.
//!
//! HDFS keeps 500 per key and refills in the background when a key's queue falls
//! below 30 %; so does this, with a few worker threads that ask the KMS in batches.
//! A pair is handed out once (moved out of the queue), and the queues of a version
//! that stopped being current are dropped (`key roll` drains them).

use super::super::KeyError;
use crate::crypto::Key;
use parking_lot::{Condvar, Mutex};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// One pre-made data key.
pub struct Pooled {
    /// The data key (zeroized when dropped).
    pub dek: Key,
    /// The KMS's unique id of the key version that wrapped it.
    pub key_id: String,
    /// The KMS's ciphertext of `dek`.
    pub edek: Vec<u8>,
}

/// Sizes of the pool.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Pairs kept per key version (0: no pool; every create asks the KMS).
    pub size: usize,
    /// Refill when the queue falls below this fraction of `size`, up to `size`.
    pub low: f64,
    /// Background threads that refill.
    pub workers: usize,
    /// Pairs one refill asks for before putting them in the queue.
    pub batch: usize,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            size: 500,
            low: 0.3,
            // PyKMIP serves one request at a time: two workers keep it busy, and
            // batches of 50 wrap 2.3 times as many keys per second as single requests
            workers: 2,
            batch: 50,
        }
    }
}

/// Makes `n` pairs under `name@version` (the KMS round trips).
pub type Fill = Box<dyn Fn(&str, u32, usize) -> Result<Vec<Pooled>, KeyError> + Send + Sync>;

#[derive(Default)]
struct Queue {
    items: VecDeque<Pooled>,
    /// Pairs being made by workers right now.
    in_flight: usize,
    /// Below the low mark: refill until full.
    refilling: bool,
    /// After a failed refill, not before this.
    retry_at: Option<Instant>,
    /// Refills failed in a row (the wait doubles with each, up to [`RETRY_MAX`]).
    failures: u32,
    /// Which queue of this version this is: one dropped by a roll and made again is
    /// another, and a refill started for the first never counts for the second.
    generation: u64,
}

/// The pools of every key version in use.
pub struct EdekPool {
    options: PoolOptions,
    queues: Mutex<HashMap<(String, u32), Queue>>,
    /// Wakes the workers.
    wake: Condvar,
    /// Wakes creates waiting for a refill.
    filled: Condvar,
    fill: Fill,
    started: std::sync::Once,
    /// The generation the next new queue gets.
    generations: std::sync::atomic::AtomicU64,
}

/// How long a refill waits after the KMS failed; doubled after each further failure.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// The longest wait between refills while the KMS keeps failing (each failure is an
/// audit line).
const RETRY_MAX: Duration = Duration::from_secs(30);

impl EdekPool {
    /// A pool whose refills call `fill`.
    pub fn new(options: PoolOptions, fill: Fill) -> Arc<EdekPool> {
        Arc::new(EdekPool {
            options,
            queues: Mutex::new(HashMap::new()),
            wake: Condvar::new(),
            filled: Condvar::new(),
            fill,
            started: std::sync::Once::new(),
            generations: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn low_mark(&self) -> usize {
        ((self.options.size as f64 * self.options.low).ceil() as usize).max(1)
    }

    fn start_workers(self: &Arc<Self>) {
        self.started.call_once(|| {
            for i in 0..self.options.workers.max(1) {
                let weak = Arc::downgrade(self);
                let spawned = std::thread::Builder::new()
                    .name(format!("ezfs-edek-pool-{i}"))
                    .spawn(move || worker(weak));
                if let Err(e) = spawned {
                    log::error!("cannot start an EDEK pool thread: {e}");
                }
            }
        });
    }

    /// Starts keeping a pool for `name@version`.
    pub fn warm(self: &Arc<Self>, name: &str, version: u32) {
        if self.options.size == 0 {
            return;
        }
        self.start_workers();
        let mut q = self.queues.lock();
        let queue = q.entry((name.to_owned(), version)).or_insert_with(|| Queue {
            generation: self
                .generations
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            ..Queue::default()
        });
        if queue.items.len() < self.low_mark() {
            queue.refilling = true;
        }
        drop(q);
        self.wake.notify_all();
    }

    /// A pair for `name@version`, if the pool has one; starts a refill below the mark.
    /// An empty queue with a refill under way is waited for (up to `wait`): one batch
    /// serves many creates, where asking the KMS for one key each would queue behind
    /// the batches. `None`: nothing is coming (a first use, or the KMS failing); the
    /// caller asks the KMS itself.
    pub fn take(self: &Arc<Self>, name: &str, version: u32, wait: Duration) -> Option<Pooled> {
        if self.options.size == 0 {
            return None;
        }
        let key = (name.to_owned(), version);
        let deadline = Instant::now() + wait;
        let mut q = self.queues.lock();
        let mut waited = false;
        loop {
            let Some(queue) = q.get_mut(&key) else {
                drop(q);
                // a queue dropped while we waited belongs to a rolled-over version:
                // not one to start again
                if !waited {
                    self.warm(name, version);
                }
                return None;
            };
            let got = queue.items.pop_front();
            let coming = queue.in_flight > 0;
            if queue.items.len() < self.low_mark() && !queue.refilling {
                queue.refilling = true;
                self.wake.notify_all();
            }
            if got.is_some() || !coming || Instant::now() >= deadline {
                return got;
            }
            self.filled.wait_until(&mut q, deadline);
            waited = true;
        }
    }

    /// The KMS answered a request for `name@version` made outside the pool: a refill
    /// waiting out a failure starts now.
    pub fn retry_now(&self, name: &str, version: u32) {
        if let Some(queue) = self.queues.lock().get_mut(&(name.to_owned(), version)) {
            if queue.retry_at.take().is_some() {
                queue.failures = 0;
                self.wake.notify_all();
            }
        }
    }

    /// Drops the queues of versions that are not their key's current one (`current`
    /// says which is; `None`: the key is gone), and starts filling the current one
    /// instead (`key roll`).
    pub fn retain_current(self: &Arc<Self>, current: &dyn Fn(&str) -> Option<u32>) {
        let mut rolled = Vec::new();
        self.queues.lock().retain(|(name, version), _| {
            let now = current(name);
            if now != Some(*version) {
                rolled.extend(now.map(|v| (name.clone(), v)));
            }
            now == Some(*version)
        });
        for (name, version) in rolled {
            self.warm(&name, version);
        }
        // creates waiting for a dropped version's refill give up on it
        self.filled.notify_all();
    }

    /// Pairs held now, over every key version.
    pub fn len(&self) -> usize {
        self.queues.lock().values().map(|q| q.items.len()).sum()
    }

    /// Whether no pair is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A refill to do: (key, version, how many, queue generation), counted as in flight.
    fn next_job(&self, q: &mut HashMap<(String, u32), Queue>) -> Option<(String, u32, usize, u64)> {
        let now = Instant::now();
        for ((name, version), queue) in q.iter_mut() {
            if !queue.refilling || queue.retry_at.is_some_and(|t| t > now) {
                continue;
            }
            let have = queue.items.len() + queue.in_flight;
            if have >= self.options.size {
                if queue.in_flight == 0 {
                    queue.refilling = false;
                }
                continue;
            }
            let n = (self.options.size - have).min(self.options.batch.max(1));
            queue.in_flight += n;
            return Some((name.clone(), *version, n, queue.generation));
        }
        None
    }

    /// Puts a refill's result in its queue (dropped if the version is no longer kept).
    fn finish(
        &self,
        name: &str,
        version: u32,
        n: usize,
        generation: u64,
        made: Result<Vec<Pooled>, KeyError>,
    ) {
        let mut q = self.queues.lock();
        let Some(queue) = q
            .get_mut(&(name.to_owned(), version))
            .filter(|queue| queue.generation == generation)
        else {
            // dropped meanwhile (a roll): its waiters look again
            drop(q);
            self.filled.notify_all();
            return;
        };
        queue.in_flight -= n;
        match made {
            Ok(items) => {
                queue.retry_at = None;
                queue.failures = 0;
                queue.items.extend(items);
                if queue.items.len() >= self.options.size {
                    queue.refilling = queue.in_flight > 0;
                }
            }
            Err(e) => {
                log::debug!("EDEK pool refill of {name}@{version} failed: {e}");
                let wait = RETRY_AFTER
                    .saturating_mul(1 << queue.failures.min(5))
                    .min(RETRY_MAX);
                queue.failures = queue.failures.saturating_add(1);
                queue.retry_at = Some(Instant::now() + wait);
            }
        }
        drop(q);
        self.filled.notify_all();
    }
}

fn worker(pool: Weak<EdekPool>) {
    loop {
        let Some(p) = pool.upgrade() else { return };
        let job = {
            let mut q = p.queues.lock();
            match p.next_job(&mut q) {
                Some(job) => Some(job),
                None => {
                    // woken by a take or a warm; the timeout notices a dropped pool and
                    // the end of a retry wait
                    p.wake.wait_for(&mut q, Duration::from_millis(500));
                    None
                }
            }
        };
        if let Some((name, version, n, generation)) = job {
            let made = (p.fill)(&name, version, n);
            p.finish(&name, version, n, generation, made);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    fn pool(size: usize, calls: Arc<AtomicUsize>, fail: Arc<AtomicBool>) -> Arc<EdekPool> {
        let opts = PoolOptions {
            size,
            low: 0.3,
            workers: 2,
            batch: 4,
        };
        EdekPool::new(
            opts,
            Box::new(move |_name: &str, version: u32, n: usize| {
                calls.fetch_add(n, Ordering::SeqCst);
                if fail.load(Ordering::SeqCst) {
                    return Err(KeyError::KmsUnavailable("down".into()));
                }
                Ok(made(version, n))
            }),
        )
    }

    /// Keys the fill closures make.
    fn made(version: u32, n: usize) -> Vec<Pooled> {
        (0..n)
            .map(|_| Pooled {
                dek: Key::random(),
                key_id: format!("id{version}"),
                edek: vec![version as u8; 8],
            })
            .collect()
    }

    /// A pool of 10 with one worker filling in one batch, each refill of `version`
    /// taking `slow(version)`; `calls` counts the refills.
    fn slow_pool(slow: fn(u32) -> Duration, calls: Arc<AtomicUsize>) -> Arc<EdekPool> {
        let opts = PoolOptions {
            size: 10,
            low: 0.3,
            workers: 1,
            batch: 10,
        };
        EdekPool::new(
            opts,
            Box::new(move |_: &str, version: u32, n: usize| {
                calls.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(slow(version));
                Ok(made(version, n))
            }),
        )
    }

    fn wait_until(what: &str, f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn fills_hands_out_once_and_refills_below_the_mark() {
        let calls = Arc::new(AtomicUsize::new(0));
        let p = pool(20, calls.clone(), Arc::default());
        assert!(
            p.take("k", 1, Duration::ZERO).is_none(),
            "the first take starts the pool"
        );
        wait_until("a full pool", || p.len() == 20);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..15 {
            let got = p.take("k", 1, Duration::ZERO).expect("pooled");
            assert!(
                seen.insert(got.dek.expose().to_vec()),
                "a DEK was handed out twice"
            );
        }
        // 5 left, below 30 % of 20: refilled to full
        wait_until("a refill", || p.len() == 20);
        assert_eq!(calls.load(Ordering::SeqCst), 35);
        for _ in 0..20 {
            let got = p.take("k", 1, Duration::ZERO).expect("pooled");
            assert!(
                seen.insert(got.dek.expose().to_vec()),
                "a DEK was handed out twice"
            );
        }
    }

    #[test]
    fn a_roll_drains_the_old_version_and_failures_back_off() {
        let fail = Arc::new(AtomicBool::new(false));
        let p = pool(8, Arc::default(), fail.clone());
        p.warm("k", 1);
        wait_until("a full pool", || p.len() == 8);
        fail.store(true, Ordering::SeqCst);
        p.retain_current(&|_| Some(2));
        assert_eq!(p.len(), 0, "the old version's pairs are dropped");
        assert!(p.take("k", 1, Duration::ZERO).is_none());
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            p.take("k", 2, Duration::ZERO).is_none(),
            "nothing is made while the KMS is down"
        );
        fail.store(false, Ordering::SeqCst);
        // (the take of k@1 above started a queue of its own: count k@2's alone)
        let queued = |v: u32| {
            p.queues
                .lock()
                .get(&("k".to_owned(), v))
                .map_or(0, |q| q.items.len())
        };
        wait_until("a refill after the outage", || queued(2) >= 7);
        assert_eq!(p.take("k", 2, Duration::ZERO).unwrap().key_id, "id2");
    }

    #[test]
    fn a_take_from_an_empty_pool_waits_for_the_refill_under_way() {
        let calls = Arc::new(AtomicUsize::new(0));
        let p = slow_pool(|_| Duration::from_millis(300), calls.clone());
        p.warm("k", 1);
        wait_until("the refill to start", || calls.load(Ordering::SeqCst) == 1);
        assert!(
            p.take("k", 1, Duration::from_secs(60)).is_some(),
            "waited for the batch"
        );
        assert_eq!(p.len(), 9);
    }

    #[test]
    fn a_take_waiting_through_a_roll_does_not_restart_the_old_version() {
        // the old version's refill is slow: a take waits for it
        let slow = |v| Duration::from_millis(if v == 1 { 500 } else { 0 });
        let p = slow_pool(slow, Arc::default());
        p.warm("k", 1);
        std::thread::sleep(Duration::from_millis(100));
        let taker = {
            let p = p.clone();
            std::thread::spawn(move || p.take("k", 1, Duration::from_secs(60)).is_some())
        };
        std::thread::sleep(Duration::from_millis(100));
        p.retain_current(&|_| Some(2));
        assert!(!taker.join().unwrap(), "the dropped version handed out a key");
        wait_until("the new version's pool", || p.len() == 10);
        std::thread::sleep(Duration::from_millis(700));
        let versions: Vec<u32> = p.queues.lock().keys().map(|(_, v)| *v).collect();
        assert_eq!(versions, [2], "only the current version is kept");
    }

    #[test]
    fn a_refill_of_a_dropped_queue_does_not_count_for_its_successor() {
        let p = slow_pool(|_| Duration::from_millis(300), Arc::default());
        p.warm("k", 1);
        std::thread::sleep(Duration::from_millis(100));
        // dropped with its refill under way, then made again (a create that read the
        // old current version just before a reload)
        p.retain_current(&|_| None);
        p.warm("k", 1);
        wait_until("the new queue to fill", || p.len() == 10);
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(p.len(), 10, "the old refill's keys went to the new queue");
        let q = p.queues.lock();
        assert_eq!(q[&("k".to_owned(), 1)].in_flight, 0);
    }

    #[test]
    fn size_zero_keeps_no_pool() {
        let calls = Arc::new(AtomicUsize::new(0));
        let p = pool(0, calls.clone(), Arc::default());
        p.warm("k", 1);
        assert!(p.take("k", 1, Duration::ZERO).is_none());
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }
}
