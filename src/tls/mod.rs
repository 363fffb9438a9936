//! TLS towards clients: the listener's certificates (`certs.rs`, chosen by SNI, swapped on
//! SIGHUP without touching open connections), the handshake with ALPN (`h2`, then
//! `http/1.1`), a readable answer to plain HTTP sent to a TLS port, and the interception CA
//! that mints certificates for CONNECT targets (`intercept.rs`). This module speaks no HTTP
//! beyond that one refusal: the connection it hands back is served by `http1` or `http2`.

mod certs;
mod intercept;

pub use certs::CertPair;
pub use intercept::{InterceptCa, init_ca};

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::server::ResolvesServerCert;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Why certificates could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    Certificate { path: PathBuf, reason: String },
    #[error("interception CA in {dir}: {reason}")]
    Ca { dir: PathBuf, reason: String },
    #[error("cannot make a certificate for {host}: {reason}")]
    Mint { host: String, reason: String },
}

/// How a client connection's handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("plain HTTP sent to a TLS port (answered 400)")]
    Plaintext,
    #[error("the client did not finish the TLS handshake in time")]
    Timeout,
    #[error(
        "the client refused hoard's certificate ({}): it does not trust the issuer, or the \
         certificate is not for the name it asked for",
        alert_in_words(*.0)
    )]
    Rejected(rustls::AlertDescription),
    #[error("TLS handshake failed: {}", failure_in_words(.0))]
    Failed(io::Error),
}

/// What a client's alert says, as a person says it.
fn alert_in_words(alert: rustls::AlertDescription) -> String {
    use rustls::AlertDescription as Alert;
    match alert {
        Alert::UnknownCA => "unknown certificate authority".to_owned(),
        Alert::BadCertificate => "bad certificate".to_owned(),
        Alert::CertificateUnknown => "certificate not accepted".to_owned(),
        Alert::CertificateExpired => "certificate expired".to_owned(),
        Alert::AccessDenied => "access denied".to_owned(),
        Alert::ProtocolVersion => "no TLS version in common".to_owned(),
        Alert::HandshakeFailure => "no cipher suite or group in common".to_owned(),
        Alert::NoApplicationProtocol => "no application protocol in common".to_owned(),
        other => format!("{other:?}"),
    }
}

/// Why a client's handshake failed, in words: rustls's errors name its types
/// (`PeerIncompatible(NoCipherSuitesInCommon)`), which an operator should not have to decode.
fn failure_in_words(error: &io::Error) -> String {
    use rustls::PeerIncompatible as Peer;
    let tls = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls {
        Some(rustls::Error::PeerIncompatible(peer)) => match peer {
            Peer::NoCipherSuitesInCommon => {
                "the client offers no cipher suite hoard accepts (it speaks TLS 1.2 and 1.3 with \
                 AES-GCM and ChaCha20 only)"
                    .to_owned()
            }
            Peer::SupportedVersionsExtensionRequired | Peer::Tls12NotOffered => {
                "the client offers only TLS versions older than 1.2, which hoard does not speak"
                    .to_owned()
            }
            Peer::NoKxGroupsInCommon => {
                "the client offers no key-exchange group hoard accepts".to_owned()
            }
            other => format!("the client's TLS is incompatible with hoard's ({other:?})"),
        },
        Some(rustls::Error::AlertReceived(alert)) => {
            format!(
                "the client ended the handshake ({})",
                alert_in_words(*alert)
            )
        }
        Some(rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. }) => {
            "the client did not speak TLS".to_owned()
        }
        Some(rustls::Error::NoApplicationProtocol) => {
            "the client offered no protocol hoard speaks (ALPN h2 or http/1.1)".to_owned()
        }
        Some(other) => other.to_string(),
        None => match error.kind() {
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => {
                "the client closed the connection during the handshake".to_owned()
            }
            _ => error.to_string(),
        },
    }
}

/// A finished handshake: the stream, and whether the client chose HTTP/2.
pub struct Accepted<S> {
    pub stream: tokio_rustls::server::TlsStream<S>,
    pub h2: bool,
}

/// The protocols offered by ALPN, preferred first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// ring, with TLS 1.3's AES-128-GCM-SHA256 preferred (see `server_config`); made once, as
/// every listener configuration and every minted leaf uses it.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<rustls::crypto::CryptoProvider>> =
        std::sync::OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            let mut provider = rustls::crypto::ring::default_provider();
            provider.cipher_suites.sort_by_key(|suite| {
                suite.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
            });
            Arc::new(provider)
        })
        .clone()
}

/// A server configuration for TLS 1.2 and 1.3 with ALPN and session resumption (tickets and
/// a session cache), choosing certificates with `resolver`.
fn server_config(resolver: Arc<dyn ResolvesServerCert>) -> Result<ServerConfig, String> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    // The server's order, so AES-128-GCM-SHA256 is chosen: OpenSSL clients ask for the
    // SHA-384 suite first, and on CPUs without SHA-512 instructions ring's SHA-384 key
    // schedule was the largest cost of a handshake in the profile (9% of hoard's time).
    config.ignore_client_order = true;
    // One ticket per handshake is what a client resumes with; rustls sends two by default.
    config.send_tls13_tickets = 1;
    config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(|e| e.to_string())?;
    Ok(config)
}

/// The TLS side of a listening port: its certificates, replaceable while running.
pub struct TlsListener {
    config: ArcSwap<ServerConfig>,
}

impl TlsListener {
    pub fn load(pairs: &[CertPair]) -> Result<TlsListener, TlsError> {
        Ok(TlsListener {
            config: ArcSwap::from_pointee(Self::config(pairs)?),
        })
    }

    fn config(pairs: &[CertPair]) -> Result<ServerConfig, TlsError> {
        let provider = provider();
        let keys = pairs
            .iter()
            .map(|pair| certs::load_pair(pair, &provider))
            .collect::<Result<Vec<_>, _>>()?;
        server_config(Arc::new(certs::BySni { keys })).map_err(|reason| TlsError::Certificate {
            path: pairs.first().map(|p| p.cert.clone()).unwrap_or_default(),
            reason,
        })
    }

    /// Loads `pairs` again (SIGHUP): new handshakes use them, open connections keep theirs.
    /// Nothing changes if any pair fails to load.
    pub fn reload(&self, pairs: &[CertPair]) -> Result<(), TlsError> {
        self.config.store(Arc::new(Self::config(pairs)?));
        Ok(())
    }

    /// The handshake on a freshly accepted socket, within `timeout`. A client that sends
    /// plain HTTP instead gets a 400 saying so, as nginx answers.
    pub async fn accept(
        &self,
        mut stream: TcpStream,
        timeout: Duration,
    ) -> Result<Accepted<TcpStream>, HandshakeError> {
        let handshake = async {
            let mut first = [0u8; 1];
            let peeked = stream
                .peek(&mut first)
                .await
                .map_err(HandshakeError::Failed)?;
            // Every TLS connection opens with a handshake record (content type 22).
            if peeked == 1 && first[0] != 0x16 {
                refuse_plaintext(&mut stream).await;
                return Err(HandshakeError::Plaintext);
            }
            handshake(self.config.load_full(), stream).await
        };
        tokio::time::timeout(timeout, handshake)
            .await
            .map_err(|_| HandshakeError::Timeout)?
    }
}

/// The TLS handshake as a server over `io`, classifying the failures a person acts on.
async fn handshake<S>(config: Arc<ServerConfig>, io: S) -> Result<Accepted<S>, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let stream = tokio_rustls::TlsAcceptor::from(config)
        .accept(io)
        .await
        .map_err(|e| {
            let alert = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .and_then(|tls| match tls {
                    rustls::Error::AlertReceived(alert) => Some(*alert),
                    _ => None,
                });
            match alert {
                Some(
                    alert @ (rustls::AlertDescription::BadCertificate
                    | rustls::AlertDescription::UnknownCA
                    | rustls::AlertDescription::CertificateUnknown
                    | rustls::AlertDescription::AccessDenied),
                ) => HandshakeError::Rejected(alert),
                _ => HandshakeError::Failed(e),
            }
        })?;
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    Ok(Accepted { stream, h2 })
}

/// Answers plain HTTP on a TLS port with a 400 that says what to do, then closes.
async fn refuse_plaintext(stream: &mut TcpStream) {
    let body = "This port speaks HTTPS: use an https:// URL.\n";
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
    // Read away what the client sent, so closing does not reset the answer away.
    let mut sink = [0u8; 2048];
    let reading = async {
        let mut total = 0;
        while let Ok(n) = tokio::io::AsyncReadExt::read(stream, &mut sink).await {
            total += n;
            if n == 0 || total > 64 * 1024 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(500), reading).await;
}

#[cfg(test)]
mod words {
    use super::*;

    #[test]
    fn handshake_failures_read_as_words_not_type_names() {
        let failed = |e: rustls::Error| HandshakeError::Failed(io::Error::other(e)).to_string();
        assert_eq!(
            failed(rustls::Error::PeerIncompatible(
                rustls::PeerIncompatible::NoCipherSuitesInCommon
            )),
            "TLS handshake failed: the client offers no cipher suite hoard accepts (it speaks \
             TLS 1.2 and 1.3 with AES-GCM and ChaCha20 only)"
        );
        assert_eq!(
            failed(rustls::Error::AlertReceived(
                rustls::AlertDescription::ProtocolVersion
            )),
            "TLS handshake failed: the client ended the handshake (no TLS version in common)"
        );
        let rejected = HandshakeError::Rejected(rustls::AlertDescription::UnknownCA).to_string();
        assert!(
            rejected.contains("(unknown certificate authority)"),
            "{rejected}"
        );
        let closed = HandshakeError::Failed(io::ErrorKind::UnexpectedEof.into()).to_string();
        assert!(closed.ends_with("the client closed the connection during the handshake"));
    }
}
