//! Why talking to an origin failed, classified for the status a client should see.

use std::error::Error as _;
use std::io;
use std::time::Duration;

/// A failure to get a response head from an origin.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot resolve {host}: {reason}")]
    Dns { host: String, reason: String },
    #[error("cannot connect to {host}: {reason}")]
    Connect { host: String, reason: String },
    #[error("no connection to {host} within {after:?}")]
    ConnectTimeout { host: String, after: Duration },
    #[error("no response from {host} within {after:?}")]
    FirstByteTimeout { host: String, after: Duration },
    #[error("bad response from {host}: {reason}")]
    Protocol { host: String, reason: String },
    #[error("TLS setup: {0}")]
    Tls(String),
    /// `--parent` could not be reached or refused (its own error pages pass through as
    /// responses).
    #[error("{0}")]
    Parent(super::ParentError),
    #[error("{0}")]
    Denied(String),
    /// The destination is this hoard itself.
    #[error("{0}")]
    Loop(String),
    /// The client's request body failed while it was being sent: malformed chunked framing,
    /// a body cut short, or one past `--max-request-body`. The client's fault, not the origin's.
    #[error("the request body could not be read: {reason}")]
    RequestBody { reason: String, too_large: bool },
}

impl From<super::Denied> for UpstreamError {
    fn from(denied: super::Denied) -> Self {
        if denied.reason == super::DenyReason::Itself {
            UpstreamError::Loop(denied.to_string())
        } else {
            UpstreamError::Denied(denied.to_string())
        }
    }
}

impl UpstreamError {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Dns { .. } => "dns",
            UpstreamError::Connect { .. } => "connect",
            UpstreamError::ConnectTimeout { .. } => "connect_timeout",
            UpstreamError::FirstByteTimeout { .. } => "first_byte_timeout",
            UpstreamError::Protocol { .. } => "protocol",
            UpstreamError::Tls(_) => "tls",
            UpstreamError::Parent(_) => "parent",
            UpstreamError::Denied(_) => "denied",
            UpstreamError::Loop(_) => "loop",
            UpstreamError::RequestBody { .. } => "request_body",
        }
    }

    /// A refusal by the destination policy, carried in an `io::Error` (from the resolver
    /// or the connector); any other error as it is.
    pub(crate) fn from_io(io: &io::Error, otherwise: impl FnOnce() -> Self) -> Self {
        match io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<super::Denied>())
        {
            Some(denied) => UpstreamError::from(denied.clone()),
            None => otherwise(),
        }
    }

    /// The origin could not be reached or did not give a usable answer (as opposed to a
    /// refusal by hoard's own rules or a client's broken request body).
    pub fn origin_unavailable(&self) -> bool {
        match self {
            UpstreamError::Dns { .. }
            | UpstreamError::Connect { .. }
            | UpstreamError::ConnectTimeout { .. }
            | UpstreamError::FirstByteTimeout { .. }
            | UpstreamError::Protocol { .. }
            | UpstreamError::Tls(_)
            | UpstreamError::Parent(_) => true,
            UpstreamError::Denied(_)
            | UpstreamError::Loop(_)
            | UpstreamError::RequestBody { .. } => false,
        }
    }

    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            UpstreamError::ConnectTimeout { .. } | UpstreamError::FirstByteTimeout { .. }
        )
    }

    /// Classifies a hyper-util client error by walking its source chain: the chain is the
    /// only place hyper-util records whether DNS, TCP, TLS or the response failed.
    pub(crate) fn from_client_error(
        host: String,
        connect_timeout: Duration,
        error: &hyper_util::client::legacy::Error,
    ) -> Self {
        let reason = source_chain(error);
        if let Some(body_error) = request_body_error(error) {
            let too_large = body_error
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            return UpstreamError::RequestBody {
                reason: body_error.to_string(),
                too_large,
            };
        }
        if let Some(parent) = find_in_chain::<super::ParentError>(error) {
            return UpstreamError::Parent(parent.clone());
        }
        if let Some(tls) = find_in_chain::<rustls::Error>(error) {
            return UpstreamError::Connect {
                host,
                reason: format!("the TLS handshake failed: {}", tls_in_words(tls)),
            };
        }
        if error.is_connect() {
            // A resolved address on the deny list (see `destinations`).
            if let Some(denied) = find_in_chain::<super::Denied>(error) {
                return UpstreamError::from(denied.clone());
            }
            if let Some(io) = find_io_error(error)
                && io.kind() == io::ErrorKind::TimedOut
            {
                return UpstreamError::ConnectTimeout {
                    host,
                    after: connect_timeout,
                };
            }
            if reason.starts_with("dns error") {
                return UpstreamError::Dns { host, reason };
            }
            return UpstreamError::Connect { host, reason };
        }
        UpstreamError::Protocol { host, reason }
    }
}

/// A TLS failure with an origin as a person reads it, instead of rustls's debug names
/// (`invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))`).
fn tls_in_words(error: &rustls::Error) -> String {
    use rustls::CertificateError as Cert;
    let certificate = |problem: &str| format!("the origin's certificate {problem}");
    match error {
        rustls::Error::InvalidCertificate(problem) => match problem {
            Cert::UnknownIssuer => certificate(
                "is not signed by an authority hoard trusts (the system's roots and --ca-file)",
            ),
            Cert::Expired | Cert::ExpiredContext { .. } => certificate("has expired"),
            Cert::NotValidYet | Cert::NotValidYetContext { .. } => {
                certificate("is not valid yet (is this machine's clock right?)")
            }
            Cert::NotValidForName | Cert::NotValidForNameContext { .. } => {
                certificate("is for another name")
            }
            Cert::Revoked => certificate("has been revoked"),
            Cert::BadSignature => certificate("has a signature that does not verify"),
            Cert::BadEncoding => certificate("cannot be read"),
            Cert::InvalidPurpose | Cert::InvalidPurposeContext { .. } => {
                certificate("is not meant for a server")
            }
            Cert::UnsupportedSignatureAlgorithmContext { .. }
            | Cert::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
                certificate("is signed with an algorithm hoard does not accept")
            }
            Cert::Other(other)
                if matches!(
                    other.0.downcast_ref::<webpki::Error>(),
                    Some(webpki::Error::CaUsedAsEndEntity)
                ) =>
            {
                certificate(
                    "is a certificate authority's, not a server's (a CA used as the server certificate)",
                )
            }
            other => certificate(&format!("was refused ({other:?})")),
        },
        rustls::Error::AlertReceived(alert) => {
            format!("the origin ended the handshake ({alert:?})")
        }
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            "the origin does not speak TLS on this port".to_owned()
        }
        rustls::Error::NoCertificatesPresented => "the origin sent no certificate".to_owned(),
        other => other.to_string(),
    }
}

/// Whether a request failed because its connection was already dead: closed or reset by the
/// origin before any response byte (a pooled connection the origin gave up on), as opposed
/// to a connect failure, a timeout or a malformed answer.
pub(super) fn stale_connection(error: &hyper_util::client::legacy::Error) -> bool {
    if error.is_connect() || request_body_error(error).is_some() {
        return false;
    }
    let mut next = error.source();
    while let Some(e) = next {
        if let Some(hyper_error) = e.downcast_ref::<hyper::Error>()
            && (hyper_error.is_incomplete_message() || hyper_error.is_canceled())
        {
            return true;
        }
        if let Some(io) = e.downcast_ref::<io::Error>()
            && matches!(
                io.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
            )
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// "dns error: failed to lookup address information: Name or service not known", without the
/// outermost "client error (Connect)" that says nothing to a person.
fn source_chain(error: &hyper_util::client::legacy::Error) -> String {
    let mut parts = Vec::new();
    let mut next = error.source();
    while let Some(e) = next {
        let text = e.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        next = e.source();
    }
    if parts.is_empty() {
        parts.push(error.to_string());
    }
    parts.join(": ")
}

/// hyper reports a request body that yielded an error as a "user" error whose source is
/// that body error; the body is the client's, so this is where client faults are told apart.
fn request_body_error(
    error: &hyper_util::client::legacy::Error,
) -> Option<&(dyn std::error::Error + 'static)> {
    let mut next = error.source();
    while let Some(e) = next {
        if let Some(hyper_error) = e.downcast_ref::<hyper::Error>()
            && hyper_error.is_user()
        {
            return hyper_error.source();
        }
        next = e.source();
    }
    None
}

/// An error of type `T` (the destination policy's refusal, the parent proxy's failure)
/// wherever hyper-util and the TLS connector wrapped it, in an `io::Error` or not.
fn find_in_chain<T: std::error::Error + 'static>(
    error: &hyper_util::client::legacy::Error,
) -> Option<&T> {
    let mut next = error.source();
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        // An `io::Error` hides the error it wraps from `source()` (it reports that one's
        // source instead), and hyper-rustls wraps rustls's in two.
        let mut wrapped = e.downcast_ref::<io::Error>().and_then(io::Error::get_ref);
        while let Some(inner) = wrapped {
            if let Some(found) = inner.downcast_ref::<T>() {
                return Some(found);
            }
            wrapped = inner
                .downcast_ref::<io::Error>()
                .and_then(io::Error::get_ref);
        }
        next = e.source();
    }
    None
}

fn find_io_error(error: &hyper_util::client::legacy::Error) -> Option<&io::Error> {
    let mut next = error.source();
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return Some(io);
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_failures_are_told_in_words() {
        use rustls::CertificateError;
        let ca_as_leaf = rustls::Error::InvalidCertificate(CertificateError::Other(
            rustls::OtherError(std::sync::Arc::new(webpki::Error::CaUsedAsEndEntity)),
        ));
        for (error, words) in [
            (ca_as_leaf, "is a certificate authority's, not a server's"),
            (
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
                "not signed by an authority hoard trusts",
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::Expired),
                "has expired",
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::NotValidForName),
                "is for another name",
            ),
        ] {
            let told = tls_in_words(&error);
            assert!(told.contains(words), "{error:?}: {told}");
            assert!(!told.contains("OtherError"), "{told}");
        }
    }
}
