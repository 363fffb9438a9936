//! The request-path error, and the one place where a failure becomes an HTTP response.

use http::{Response, StatusCode};

use crate::body::{self, ProxyBody};
use crate::upstream::UpstreamError;

/// Who is at fault; it picks the log level and, later, the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSource {
    Client,
    Origin,
}

impl ErrorSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorSource::Client => "client",
            ErrorSource::Origin => "origin",
        }
    }
}

/// Why hoard answered a request itself instead of relaying an origin's response.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("unsupported URL scheme {0:?}: hoard proxies http:// and https://")]
    UnsupportedScheme(String),
    #[error("the path names no site: use /www.example.com/path")]
    GatewayUsage,
    #[error("redirects loop back to {0}")]
    RedirectLoop(String),
    #[error("more than {0} redirects")]
    TooManyRedirects(usize),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("the request took longer than {0:?}")]
    RequestTimeout(std::time::Duration),
    #[error("proxy authentication required")]
    ProxyAuthRequired,
    #[error("authentication required")]
    AuthRequired,
    #[error("request body of {0} bytes is over the limit of {1} bytes")]
    BodyTooLarge(u64, u64),
    #[error(transparent)]
    Admin(#[from] crate::admin::AdminError),
    #[error("CONNECT to port {port} is not allowed (allowed ports: {allowed})")]
    ConnectPortDenied { port: u16, allowed: String },
    #[error("request loops back to this proxy (its Via already names this hoard)")]
    Loop,
    #[error("this server does not answer for host {0:?}")]
    MisdirectedRequest(String),
    #[error("{0}")]
    MethodNotAllowed(&'static str),
    #[error("{0}")]
    CrossSite(&'static str),
    #[error("the admin interface is served on {0}, not on the proxy port")]
    AdminElsewhere(std::net::SocketAddr),
    #[error("request framing: {0}")]
    Framing(#[from] crate::body::FramingError),
    /// A head the client connection could not parse (it closes after the answer).
    #[error(transparent)]
    Head(#[from] crate::http1::HeadError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_)
            | ProxyError::UnsupportedScheme(_)
            | ProxyError::GatewayUsage => StatusCode::BAD_REQUEST,
            ProxyError::ConnectPortDenied { .. } | ProxyError::Forbidden(_) => {
                StatusCode::FORBIDDEN
            }
            ProxyError::Admin(crate::admin::AdminError::NotFound(_)) => StatusCode::NOT_FOUND,
            ProxyError::Admin(crate::admin::AdminError::WrongMethod { .. }) => {
                StatusCode::METHOD_NOT_ALLOWED
            }
            ProxyError::Admin(_) => StatusCode::BAD_REQUEST,
            ProxyError::BodyTooLarge(..) => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::ProxyAuthRequired => StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            ProxyError::AuthRequired => StatusCode::UNAUTHORIZED,
            ProxyError::Loop | ProxyError::RedirectLoop(_) | ProxyError::TooManyRedirects(_) => {
                StatusCode::LOOP_DETECTED
            }
            ProxyError::MisdirectedRequest(_) => StatusCode::MISDIRECTED_REQUEST,
            ProxyError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::CrossSite(_) => StatusCode::FORBIDDEN,
            ProxyError::AdminElsewhere(_) => StatusCode::NOT_FOUND,
            ProxyError::Framing(crate::body::FramingError::UnsupportedCoding(_)) => {
                StatusCode::NOT_IMPLEMENTED
            }
            ProxyError::Framing(_) => StatusCode::BAD_REQUEST,
            ProxyError::Head(e) => e.status(),
            ProxyError::Upstream(UpstreamError::RequestBody {
                too_large: true, ..
            }) => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::Upstream(UpstreamError::RequestBody { .. }) => StatusCode::BAD_REQUEST,
            ProxyError::Upstream(UpstreamError::Denied(_)) => StatusCode::FORBIDDEN,
            ProxyError::Upstream(UpstreamError::Loop(_)) => StatusCode::LOOP_DETECTED,
            ProxyError::Upstream(e) if e.is_timeout() => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::RequestTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Upstream(_) => StatusCode::BAD_GATEWAY,
        }
    }

    pub fn source(&self) -> ErrorSource {
        match self {
            ProxyError::Upstream(UpstreamError::RequestBody { .. }) => ErrorSource::Client,
            ProxyError::Upstream(_)
            | ProxyError::RedirectLoop(_)
            | ProxyError::TooManyRedirects(_) => ErrorSource::Origin,
            _ => ErrorSource::Client,
        }
    }

    /// A short plain-text answer a person can read: the status, then what went wrong. A
    /// browser using the gateway gets a page that explains the URL form instead.
    pub fn into_response(self) -> Response<ProxyBody> {
        let status = self.status();
        if let ProxyError::GatewayUsage = self {
            return super::gateway::page(status, super::gateway::USAGE_PAGE);
        }
        let text = format!(
            "{} {}\nhoard: {}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            self
        );
        let challenge = match self {
            ProxyError::ProxyAuthRequired => Some(http::header::PROXY_AUTHENTICATE),
            ProxyError::AuthRequired => Some(http::header::WWW_AUTHENTICATE),
            _ => None,
        };
        let mut response = body::generated(status, "text/plain; charset=utf-8", text);
        let headers = response.headers_mut();
        match self {
            ProxyError::MethodNotAllowed(_) => {
                headers.insert(
                    http::header::ALLOW,
                    http::HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH"),
                );
            }
            ProxyError::Admin(crate::admin::AdminError::WrongMethod { allowed, .. }) => {
                headers.insert(http::header::ALLOW, http::HeaderValue::from_static(allowed));
            }
            // The rest of the connection cannot be trusted to be framed as it was read.
            ProxyError::Framing(_)
            | ProxyError::Head(_)
            | ProxyError::Upstream(UpstreamError::RequestBody { .. }) => {
                headers.insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            _ => {}
        }
        if let Some(name) = challenge {
            response.headers_mut().insert(
                name,
                http::HeaderValue::from_static("Basic realm=\"hoard\", charset=\"UTF-8\""),
            );
        }
        response
    }
}
