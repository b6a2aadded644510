//! A KMIP client: zone keys held by a KMIP key-management server, which wraps and unwraps
//! data keys with AES-256-GCM without the key ever leaving it.
//!
//! [`KmipConfig::parse`] reads a `kmip://` URL, [`KmipClient`] keeps pooled TLS
//! connections (client-certificate authentication) to one or more servers and fails over
//! between them. The wire format is KMIP 1.4 TTLV ([`ttlv`], [`messages`]).

pub mod client;
pub mod messages;
pub mod tls;
pub mod ttlv;

pub use client::KmipClient;

use std::path::PathBuf;
use std::time::Duration;

/// The default KMIP port (IANA).
pub const DEFAULT_PORT: u16 = 5696;
/// The default timeout of a connect, read or write.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The default number of pooled connections per server.
pub const DEFAULT_CONNECTIONS: usize = 4;

/// What can go wrong talking to a KMS. Messages are one sentence and never contain key
/// material.
#[derive(Debug, thiserror::Error)]
pub enum KmipError {
    /// No server could be reached (network, TLS or timeout): every endpoint failed or
    /// is backing off after a failure.
    #[error("KMS unavailable: {0}")]
    Unavailable(String),
    /// A server answered with a failure result: unknown key, wrong key state, a failed
    /// decryption (wrong additional data, altered blob), permission denied.
    #[error("KMS refused: {0}")]
    Refused(String),
    /// The `kmip://` URL or the certificate files are unusable.
    #[error("KMIP configuration: {0}")]
    Config(String),
    /// A server's answer is malformed or not what was asked.
    #[error("KMIP protocol error: {0}")]
    Protocol(String),
}

/// The lifecycle state of a key (KMIP State attribute).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Created, not yet usable.
    PreActive,
    /// Usable for encryption and decryption.
    Active,
    /// Revoked: no longer usable.
    Deactivated,
    /// Revoked as compromised.
    Compromised,
    /// Key material destroyed.
    Destroyed,
    /// Destroyed after being compromised.
    DestroyedCompromised,
    /// A state value this client does not know.
    Other(u32),
}

impl KeyState {
    /// The state for a KMIP State enumeration value.
    pub fn from_kmip(v: u32) -> KeyState {
        match v {
            1 => KeyState::PreActive,
            2 => KeyState::Active,
            3 => KeyState::Deactivated,
            4 => KeyState::Compromised,
            5 => KeyState::Destroyed,
            6 => KeyState::DestroyedCompromised,
            other => KeyState::Other(other),
        }
    }
}

/// Where the KMS servers are and how to authenticate to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmipConfig {
    /// The servers, tried round-robin, the next one on failure.
    pub endpoints: Vec<(String, u16)>,
    /// PEM file of the CA that signed the servers' certificates.
    pub ca: PathBuf,
    /// PEM file of the client certificate (chain, leaf first).
    pub cert: PathBuf,
    /// PEM file of the client's private key.
    pub key: PathBuf,
    /// Bound on each connect, read and write.
    pub timeout: Duration,
    /// Most connections kept open to each server.
    pub connections: usize,
}

fn percent_decode(s: &str, what: &str) -> Result<String, KmipError> {
    let bad = || KmipError::Config(format!("bad percent-escape in the KMIP URL's {what}"));
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or_else(bad)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

fn parse_endpoint(s: &str) -> Result<(String, u16), KmipError> {
    let bad = |why: &str| {
        KmipError::Config(format!(
            "bad KMS endpoint '{}': {why}",
            crate::text::shorten(s, 80)
        ))
    };
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(|| bad("no closing ']'"))?;
        match after {
            "" => (host, None),
            _ => (
                host,
                Some(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| bad("expected ':' after ']'"))?,
                ),
            ),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    if host.contains(['/', '@', ' ']) || (host.contains(':') && !s.starts_with('[')) {
        return Err(bad("not a host name or address"));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p != 0 => p,
            _ => return Err(bad("the port must be a number from 1 to 65535")),
        },
    };
    Ok((host.to_owned(), port))
}

impl KmipConfig {
    /// Parses `kmip://HOST:PORT[,HOST2:PORT2…]?ca=PATH&cert=PATH&key=PATH[&timeout=SECS][&connections=N]`.
    ///
    /// The port defaults to 5696, IPv6 addresses go in brackets, paths must be absolute
    /// (they may be percent-escaped), `timeout` is seconds (fractions allowed, default 5)
    /// and `connections` is 1 to 64 (default 4).
    pub fn parse(url: &str) -> Result<KmipConfig, KmipError> {
        let err = |m: String| Err(KmipError::Config(m));
        let Some(rest) = url.strip_prefix("kmip://") else {
            return err("a KMIP URL starts with kmip://".into());
        };
        let (hosts, query) = rest.split_once('?').unwrap_or((rest, ""));
        let hosts = hosts.strip_suffix('/').unwrap_or(hosts);
        if hosts.is_empty() {
            return err("the KMIP URL names no server".into());
        }
        let endpoints = hosts
            .split(',')
            .map(parse_endpoint)
            .collect::<Result<Vec<_>, _>>()?;
        let (mut ca, mut cert, mut key) = (None, None, None);
        let mut timeout = DEFAULT_TIMEOUT;
        let mut connections = DEFAULT_CONNECTIONS;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let Some((k, v)) = pair.split_once('=') else {
                return err(format!(
                    "KMIP URL parameter '{}' has no value",
                    crate::text::shorten(pair, 40)
                ));
            };
            match k {
                "ca" | "cert" | "key" => {
                    let path = PathBuf::from(percent_decode(v, k)?);
                    if !path.is_absolute() {
                        return err(format!("the KMIP URL's {k} path must be absolute"));
                    }
                    let slot = match k {
                        "ca" => &mut ca,
                        "cert" => &mut cert,
                        _ => &mut key,
                    };
                    if slot.replace(path).is_some() {
                        return err(format!("the KMIP URL gives {k} twice"));
                    }
                }
                "timeout" => match v.parse::<f64>() {
                    Ok(s) if s > 0.0 && s <= 3600.0 => timeout = Duration::from_secs_f64(s),
                    _ => {
                        return err("the KMIP URL's timeout must be seconds, above 0 and at most 3600".into())
                    }
                },
                "connections" => match v.parse::<usize>() {
                    Ok(n) if (1..=64).contains(&n) => connections = n,
                    _ => return err("the KMIP URL's connections must be a number from 1 to 64".into()),
                },
                other => {
                    return err(format!(
                        "unknown KMIP URL parameter '{}' (known: ca, cert, key, timeout, connections)",
                        crate::text::shorten(other, 40)
                    ))
                }
            }
        }
        let missing = |what: &str| KmipError::Config(format!("the KMIP URL lacks {what}=PATH"));
        Ok(KmipConfig {
            endpoints,
            ca: ca.ok_or_else(|| missing("ca"))?,
            cert: cert.ok_or_else(|| missing("cert"))?,
            key: key.ok_or_else(|| missing("key"))?,
            timeout,
            connections,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_url() {
        let c = KmipConfig::parse(
            "kmip://kms1:5696,10.0.0.2:7000,[::1]:9?ca=/a/ca.pem&cert=/a/c%20d.pem&key=/a/k.pem&timeout=2.5&connections=8",
        )
        .unwrap();
        assert_eq!(
            c.endpoints,
            [
                ("kms1".to_owned(), 5696),
                ("10.0.0.2".to_owned(), 7000),
                ("::1".to_owned(), 9)
            ]
        );
        assert_eq!(c.cert, PathBuf::from("/a/c d.pem"));
        assert_eq!(c.timeout, Duration::from_millis(2500));
        assert_eq!(c.connections, 8);
    }

    #[test]
    fn defaults() {
        let c = KmipConfig::parse("kmip://kms?ca=/ca&cert=/c&key=/k").unwrap();
        assert_eq!(c.endpoints, [("kms".to_owned(), DEFAULT_PORT)]);
        assert_eq!((c.timeout, c.connections), (DEFAULT_TIMEOUT, DEFAULT_CONNECTIONS));
    }

    #[test]
    fn refusals_are_one_line() {
        for (url, want) in [
            ("http://kms?ca=/a&cert=/b&key=/c", "starts with kmip://"),
            ("kmip://?ca=/a&cert=/b&key=/c", "names no server"),
            ("kmip://kms?ca=ca.pem&cert=/b&key=/c", "ca path must be absolute"),
            ("kmip://kms?cert=/b&key=/c", "lacks ca=PATH"),
            ("kmip://kms:0?ca=/a&cert=/b&key=/c", "port must be"),
            ("kmip://kms:x?ca=/a&cert=/b&key=/c", "port must be"),
            ("kmip://a,,b?ca=/a&cert=/b&key=/c", "no host"),
            ("kmip://kms?ca=/a&cert=/b&key=/c&timeout=0", "timeout"),
            ("kmip://kms?ca=/a&cert=/b&key=/c&connections=0", "connections"),
            (
                "kmip://kms?ca=/a&cert=/b&key=/c&user=x",
                "unknown KMIP URL parameter 'user'",
            ),
            ("kmip://kms?ca=/a&ca=/b&cert=/b&key=/c", "gives ca twice"),
        ] {
            let e = KmipConfig::parse(url).unwrap_err().to_string();
            assert!(e.contains(want), "{url}: {e}");
            assert!(!e.contains('\n'));
        }
    }
}
