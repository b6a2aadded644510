//! The KMIP client: a pool of persistent TLS connections per server, round-robin over
//! the servers with failover and back-off, and the key operations on top.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use zeroize::Zeroizing;

use super::messages::{self, Operation, GCM_IV_LEN, GCM_TAG_LEN};
use super::tls::{self, TlsStream};
use super::ttlv::{self, Ttlv};
use super::{KeyState, KmipConfig, KmipError};

/// The largest response accepted (PyKMIP's own limit is 1 MiB).
const MAX_RESPONSE: usize = 4 << 20;
/// The back-off after an endpoint's first failure; it doubles with each further one.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest back-off.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// A client of one or more KMIP servers holding the same keys. Cheap to share between
/// threads (`Send + Sync`); connections are opened on first use and kept.
///
/// Each call goes to the servers round-robin from a rotating start and moves on to the
/// next when one cannot be reached; a server that failed is skipped for a back-off of
/// 1 s, doubling to 10 s, unless every server is backing off, in which case the one
/// whose back-off ends first is tried anyway, so calls resume as soon as a server is
/// back. A failure result from a server ([`KmipError::Refused`]) is final: it is not a
/// reason to ask another server.
pub struct KmipClient {
    endpoints: Vec<Endpoint>,
    next: AtomicUsize,
    timeout: Duration,
}

impl std::fmt::Debug for KmipClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let eps: Vec<String> = self.endpoints.iter().map(Endpoint::label).collect();
        f.debug_struct("KmipClient")
            .field("endpoints", &eps)
            .finish_non_exhaustive()
    }
}

struct Endpoint {
    host: String,
    port: u16,
    name: ServerName<'static>,
    tls: Arc<ClientConfig>,
    max: usize,
    timeout: Duration,
    pool: Mutex<Pool>,
    freed: Condvar,
    health: Mutex<Health>,
}

#[derive(Default)]
struct Pool {
    idle: Vec<TlsStream>,
    /// Connections open or being opened: idle ones and those in use.
    open: usize,
}

#[derive(Default)]
struct Health {
    failures: u32,
    down_until: Option<Instant>,
}

/// Why one attempt at one endpoint failed.
enum Attempt {
    /// The endpoint could not be reached or did not answer: try the next.
    Transport(String),
    /// It answered something that is not a KMIP response: give up.
    Protocol(String),
}

impl Endpoint {
    fn label(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// When the endpoint's back-off ends, if it is backing off at `now`.
    fn backing_off(&self, now: Instant) -> Option<Instant> {
        self.health.lock().down_until.filter(|t| *t > now)
    }

    fn succeeded(&self) {
        let mut h = self.health.lock();
        h.failures = 0;
        h.down_until = None;
    }

    fn failed(&self) {
        {
            let mut h = self.health.lock();
            h.failures = h.failures.saturating_add(1);
            let backoff = FIRST_BACKOFF
                .saturating_mul(1 << (h.failures - 1).min(8))
                .min(MAX_BACKOFF);
            h.down_until = Some(Instant::now() + backoff);
        }
        // The idle connections are most likely broken as well.
        let mut p = self.pool.lock();
        p.open -= p.idle.len();
        p.idle.clear();
        self.freed.notify_all();
    }

    /// An idle connection, or `None` with a slot reserved for a new one; waits up to the
    /// timeout while all `max` connections are in use.
    fn acquire(&self) -> Result<Option<TlsStream>, Attempt> {
        let deadline = Instant::now() + self.timeout;
        let mut p = self.pool.lock();
        loop {
            if let Some(c) = p.idle.pop() {
                return Ok(Some(c));
            }
            if p.open < self.max {
                p.open += 1;
                return Ok(None);
            }
            if self.freed.wait_until(&mut p, deadline).timed_out() {
                return Err(Attempt::Transport(format!(
                    "all {} connections stayed busy for {:?}",
                    self.max, self.timeout
                )));
            }
        }
    }

    /// Gives back a slot: with its connection to keep, or `None` to close it.
    fn release(&self, conn: Option<TlsStream>) {
        let mut p = self.pool.lock();
        match conn {
            Some(c) => p.idle.push(c),
            None => p.open -= 1,
        }
        self.freed.notify_one();
    }

    /// Sends `request` and reads the response, on a pooled connection if there is one;
    /// a pooled connection that turns out broken is replaced once.
    fn roundtrip(&self, request: &[u8]) -> Result<Zeroizing<Ttlv>, Attempt> {
        let mut slot = self.acquire()?;
        let mut reused = slot.is_some();
        loop {
            let mut conn = match slot.take() {
                Some(c) => c,
                None => match tls::connect(&self.tls, &self.host, self.port, &self.name, self.timeout) {
                    Ok(c) => c,
                    Err(e) => {
                        self.release(None);
                        return Err(Attempt::Transport(e));
                    }
                },
            };
            match exchange(&mut conn, request) {
                Ok(resp) => {
                    self.release(Some(conn));
                    return Ok(resp);
                }
                Err(Attempt::Transport(e)) if reused => {
                    log::debug!(
                        "KMS {}: pooled connection broken ({e}); reconnecting",
                        self.label()
                    );
                    reused = false;
                }
                Err(e) => {
                    self.release(None);
                    return Err(e);
                }
            }
        }
    }
}

/// One request and its response on `conn`. The response bytes are zeroized after
/// decoding; the decoded tree is zeroized when dropped.
fn exchange(conn: &mut TlsStream, request: &[u8]) -> Result<Zeroizing<Ttlv>, Attempt> {
    let io = |what: &str, e: std::io::Error| Attempt::Transport(format!("{what} failed: {e}"));
    conn.write_all(request)
        .map_err(|e| io("sending the request", e))?;
    conn.flush().map_err(|e| io("sending the request", e))?;
    let mut buf = Zeroizing::new(vec![0u8; ttlv::HEADER_LEN]);
    conn.read_exact(&mut buf)
        .map_err(|e| io("reading the response", e))?;
    if buf[..4] != [0x42, 0x00, 0x7B, 0x01] {
        return Err(Attempt::Protocol(
            "the KMS answer is not a KMIP response message".into(),
        ));
    }
    let len = ttlv::header_value_len(&buf).unwrap_or(usize::MAX);
    if len > MAX_RESPONSE || len % 8 != 0 {
        return Err(Attempt::Protocol(format!(
            "the KMS response announces a bad length ({len} bytes)"
        )));
    }
    buf.resize(ttlv::HEADER_LEN + len, 0);
    conn.read_exact(&mut buf[ttlv::HEADER_LEN..])
        .map_err(|e| io("reading the response", e))?;
    ttlv::decode(&buf)
        .map(Zeroizing::new)
        .map_err(|e| Attempt::Protocol(format!("the KMS response does not decode: {e}")))
}

impl KmipClient {
    /// A client for `cfg`: reads the CA, certificate and key now (a bad file is a
    /// [`KmipError::Config`]); connects on first use.
    pub fn new(cfg: KmipConfig) -> Result<KmipClient, KmipError> {
        if cfg.endpoints.is_empty() {
            return Err(KmipError::Config("no KMS endpoint given".into()));
        }
        if cfg.connections == 0 || cfg.timeout.is_zero() {
            return Err(KmipError::Config(
                "connections and timeout must be above zero".into(),
            ));
        }
        let tls = tls::client_config(&cfg.ca, &cfg.cert, &cfg.key)?;
        let endpoints = cfg
            .endpoints
            .iter()
            .map(|(host, port)| {
                Ok(Endpoint {
                    host: host.clone(),
                    port: *port,
                    name: tls::server_name(host)?,
                    tls: Arc::clone(&tls),
                    max: cfg.connections,
                    timeout: cfg.timeout,
                    pool: Mutex::new(Pool::default()),
                    freed: Condvar::new(),
                    health: Mutex::new(Health::default()),
                })
            })
            .collect::<Result<Vec<_>, KmipError>>()?;
        Ok(KmipClient {
            endpoints,
            next: AtomicUsize::new(0),
            timeout: cfg.timeout,
        })
    }

    /// Sends `request` to the servers in turn until one answers; returns the payload of
    /// its response (zeroized on drop).
    fn call(&self, request: Ttlv, op: Operation) -> Result<Zeroizing<Ttlv>, KmipError> {
        let resp = self.call_raw(request)?;
        Ok(Zeroizing::new(messages::parse_response(&resp, op)?))
    }

    /// Sends `request` to the servers in turn until one answers; returns the whole
    /// response message (zeroized on drop), unchecked.
    fn call_raw(&self, request: Ttlv) -> Result<Zeroizing<Ttlv>, KmipError> {
        let request = Zeroizing::new(Zeroizing::new(request).encode());
        let n = self.endpoints.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let now = Instant::now();
        let mut order = Vec::with_capacity(n);
        let mut skipped = Vec::new();
        for i in 0..n {
            let ep = &self.endpoints[(start + i) % n];
            match ep.backing_off(now) {
                None => order.push(ep),
                Some(until) => skipped.push((ep, until)),
            }
        }
        if order.is_empty() {
            // Every server failed lately: probe the one whose back-off ends first rather
            // than fail without trying, so that a server that is back is used at once.
            skipped.sort_by_key(|(_, until)| *until);
            order.push(skipped.remove(0).0);
        }
        let mut failures = Vec::new();
        for ep in order {
            match ep.roundtrip(&request) {
                Ok(resp) => {
                    ep.succeeded();
                    return Ok(resp);
                }
                Err(Attempt::Protocol(m)) => return Err(KmipError::Protocol(format!("{}: {m}", ep.label()))),
                Err(Attempt::Transport(e)) => {
                    log::warn!("KMS {} failed: {e}", ep.label());
                    ep.failed();
                    failures.push(format!("{}: {e}", ep.label()));
                }
            }
        }
        for (ep, _) in skipped {
            failures.push(format!("{}: skipped after a recent failure", ep.label()));
        }
        Err(KmipError::Unavailable(format!(
            "no KMS answered (timeout {:?}): {}",
            self.timeout,
            failures.join("; ")
        )))
    }

    /// Creates an AES-256 key for Encrypt and Decrypt named `name` and activates it;
    /// returns its unique identifier.
    pub fn create_key(&self, name: &str) -> Result<String, KmipError> {
        let payload = self.call(messages::create(name), Operation::Create)?;
        let uid = messages::payload_uid(&payload)?;
        if let Err(e) = self.call(messages::activate(&uid), Operation::Activate) {
            // Leave no unusable key behind if possible; the first error is the one to report.
            let _ = self.destroy(&uid);
            return Err(e);
        }
        Ok(uid)
    }

    /// The unique identifiers of the objects named `name` (empty if none).
    pub fn locate(&self, name: &str) -> Result<Vec<String>, KmipError> {
        let payload = self.call(messages::locate(name), Operation::Locate)?;
        messages::payload_uids(&payload)
    }

    /// The lifecycle state of key `uid`.
    pub fn state(&self, uid: &str) -> Result<KeyState, KmipError> {
        let payload = self.call(messages::get_attributes(uid), Operation::GetAttributes)?;
        Ok(messages::payload_state_and_name(&payload)?.0)
    }

    /// The Name of key `uid`, if it has one.
    pub fn name_of(&self, uid: &str) -> Result<Option<String>, KmipError> {
        let payload = self.call(messages::get_attributes(uid), Operation::GetAttributes)?;
        Ok(messages::payload_state_and_name(&payload)?.1)
    }

    /// Encrypts `plaintext` with key `uid` by AES-256-GCM in the KMS, binding `aad`;
    /// returns `iv(12) || ciphertext || tag(16)`. The nonce is chosen here at random.
    pub fn encrypt(&self, uid: &str, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, KmipError> {
        let mut iv = [0u8; GCM_IV_LEN];
        getrandom::fill(&mut iv)
            .map_err(|e| KmipError::Unavailable(format!("the system's random source failed: {e}")))?;
        let payload = self.call(messages::encrypt(uid, &iv, aad, plaintext), Operation::Encrypt)?;
        let wrapped = messages::payload_wrapped(&payload, &iv)?;
        if wrapped.len() != GCM_IV_LEN + plaintext.len() + GCM_TAG_LEN {
            return Err(KmipError::Protocol(
                "the KMS ciphertext is not as long as the plaintext".into(),
            ));
        }
        Ok(wrapped)
    }

    /// Encrypts each of `plaintexts` with key `uid` like [`KmipClient::encrypt`], in one
    /// request message (one round trip for the batch).
    pub fn encrypt_many(
        &self,
        uid: &str,
        aad: &[u8],
        plaintexts: &[&[u8]],
    ) -> Result<Vec<Vec<u8>>, KmipError> {
        if plaintexts.is_empty() {
            return Ok(Vec::new());
        }
        let mut ivs = vec![[0u8; GCM_IV_LEN]; plaintexts.len()];
        for iv in &mut ivs {
            getrandom::fill(iv)
                .map_err(|e| KmipError::Unavailable(format!("the system's random source failed: {e}")))?;
        }
        let resp = self.call_raw(messages::encrypt_batch(uid, &ivs, aad, plaintexts))?;
        let items = messages::parse_batch_response(&resp, Operation::Encrypt, plaintexts.len())?;
        items
            .into_iter()
            .zip(ivs.iter().zip(plaintexts))
            .map(|(item, (iv, plain))| {
                let wrapped = messages::payload_wrapped(&item?, iv)?;
                if wrapped.len() != GCM_IV_LEN + plain.len() + GCM_TAG_LEN {
                    return Err(KmipError::Protocol(
                        "the KMS ciphertext is not as long as the plaintext".into(),
                    ));
                }
                Ok(wrapped)
            })
            .collect()
    }

    /// Decrypts a blob from [`KmipClient::encrypt`] with key `uid` and the same `aad`.
    /// A different `aad`, an altered blob or another key is [`KmipError::Refused`].
    pub fn decrypt(&self, uid: &str, aad: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, KmipError> {
        if wrapped.len() < GCM_IV_LEN + GCM_TAG_LEN {
            return Err(KmipError::Refused(format!(
                "a wrapped blob of {} bytes is too short (at least {} expected)",
                wrapped.len(),
                GCM_IV_LEN + GCM_TAG_LEN
            )));
        }
        let (iv, rest) = wrapped.split_at(GCM_IV_LEN);
        let (ciphertext, auth_tag) = rest.split_at(rest.len() - GCM_TAG_LEN);
        let payload = self.call(
            messages::decrypt(uid, iv, aad, ciphertext, auth_tag),
            Operation::Decrypt,
        )?;
        let data = messages::payload_data(&payload)?;
        if data.len() != ciphertext.len() {
            return Err(KmipError::Protocol(
                "the KMS plaintext is not as long as the ciphertext".into(),
            ));
        }
        Ok(Zeroizing::new(data.to_vec()))
    }

    /// Revokes key `uid` (reason: cessation of operation): it becomes Deactivated and
    /// can no longer encrypt or decrypt.
    pub fn revoke(&self, uid: &str) -> Result<(), KmipError> {
        self.call(messages::revoke(uid), Operation::Revoke).map(drop)
    }

    /// Destroys key `uid` (the KMS refuses while it is Active).
    pub fn destroy(&self, uid: &str) -> Result<(), KmipError> {
        self.call(messages::destroy(uid), Operation::Destroy).map(drop)
    }
}

/// The client is shared between the filesystem's threads.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<KmipClient>();
};
