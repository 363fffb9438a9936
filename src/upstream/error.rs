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
    #[error("{0}")]
    Denied(String),
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
            UpstreamError::Denied(_) => "denied",
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
        if error.is_connect() {
            // A resolved address on the deny list (see `destinations`).
            if let Some(io) = find_io_error(error)
                && io.kind() == io::ErrorKind::PermissionDenied
            {
                return UpstreamError::Denied(io.to_string());
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
