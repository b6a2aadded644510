//! TLS for KMIP: rustls on ring, the server checked against one CA file, the client
//! authenticated by its certificate and key (PEM files).

use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::KmipError;

/// One TLS connection to a KMS.
pub type TlsStream = StreamOwned<ClientConnection, TcpStream>;

fn config_err(path: &Path, what: &str, e: impl std::fmt::Display) -> KmipError {
    KmipError::Config(format!("cannot read the KMIP {what} {}: {e}", path.display()))
}

/// The client TLS configuration: trust only the CA in `ca`, present `cert` (a chain,
/// leaf first) with its private key `key`.
pub fn client_config(ca: &Path, cert: &Path, key: &Path) -> Result<Arc<ClientConfig>, KmipError> {
    let mut roots = RootCertStore::empty();
    let cas = CertificateDer::pem_file_iter(ca).map_err(|e| config_err(ca, "CA file", e))?;
    for c in cas {
        let c = c.map_err(|e| config_err(ca, "CA file", e))?;
        roots.add(c).map_err(|e| config_err(ca, "CA file", e))?;
    }
    if roots.is_empty() {
        return Err(config_err(ca, "CA file", "it holds no certificate"));
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| config_err(cert, "client certificate", e))?
        .collect::<Result<_, _>>()
        .map_err(|e| config_err(cert, "client certificate", e))?;
    if chain.is_empty() {
        return Err(config_err(cert, "client certificate", "it holds no certificate"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| config_err(key, "client key", e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| KmipError::Config(format!("TLS setup failed: {e}")))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key_der)
        .map_err(|e| KmipError::Config(format!("the KMIP client certificate and key do not fit: {e}")))?;
    Ok(Arc::new(config))
}

/// The name the server's certificate must carry: an IP address or a DNS name.
pub fn server_name(host: &str) -> Result<ServerName<'static>, KmipError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(host.to_owned())
        .map_err(|_| KmipError::Config(format!("'{host}' is not a valid KMS host name")))
}

/// Connects to `host:port` and completes the TLS handshake; connect, reads and writes
/// are bounded by `timeout`. The error is a one-line reason without the endpoint.
pub fn connect(
    config: &Arc<ClientConfig>,
    host: &str,
    port: u16,
    name: &ServerName<'static>,
    timeout: Duration,
) -> Result<TlsStream, String> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve the host: {e}"))?
        .collect();
    let mut last = String::from("the host has no address");
    let mut tcp = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = format!("connect failed: {e}"),
        }
    }
    let tcp = tcp.ok_or(last)?;
    tcp.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    let conn = ClientConnection::new(Arc::clone(config), name.clone())
        .map_err(|e| format!("TLS setup failed: {e}"))?;
    let mut stream = StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .map_err(|e| format!("TLS handshake failed: {e}"))?;
    }
    Ok(stream)
}
