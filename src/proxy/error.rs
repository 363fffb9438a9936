//! The request-path error, and the one place where a failure becomes an HTTP response.

use http::{Response, StatusCode};

use crate::body::{self, ProxyBody};
use crate::exchange::{REQUEST_ID, RequestId};
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

    /// A short answer a person can read: the status, what went wrong and the request's id
    /// (also in `X-Request-Id`, to find its log line), as a small HTML page for a client that
    /// asks for HTML (`html`: a browser) and plain text for others. A browser using the
    /// gateway gets a page that explains the URL form instead.
    pub fn into_response(self, html: bool, id: &RequestId) -> Response<ProxyBody> {
        let status = self.status();
        if let ProxyError::GatewayUsage = self {
            return super::gateway::page(status, super::gateway::USAGE_PAGE);
        }
        let title = format!(
            "{} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        );
        let (content_type, text) = if html {
            (
                "text/html; charset=utf-8",
                error_page(&title, &self.to_string(), id),
            )
        } else {
            (
                "text/plain; charset=utf-8",
                format!("{title}\nhoard: {self}\nrequest id: {id}\n"),
            )
        };
        let challenge = match self {
            ProxyError::ProxyAuthRequired => Some(http::header::PROXY_AUTHENTICATE),
            ProxyError::AuthRequired => Some(http::header::WWW_AUTHENTICATE),
            _ => None,
        };
        let mut response = body::generated(status, content_type, text);
        let headers = response.headers_mut();
        if let Ok(value) = http::HeaderValue::try_from(id.to_string()) {
            headers.insert(REQUEST_ID, value);
        }
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

/// Whether a request's `Accept` asks for HTML (a browser's does, first).
pub(super) fn wants_html(request: &http::HeaderMap) -> bool {
    request
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| {
            item.split(';')
                .next()
                .is_some_and(|t| t.trim() == "text/html")
        })
}

/// The HTML error page: the status, the reason in words (escaped: it may hold a URL a client
/// chose), the request's id (escaped too: a client may have chosen it) and hoard's name.
fn error_page(title: &str, reason: &str, id: &RequestId) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{title}</title>\
         <style>body{{font:16px/1.5 system-ui,sans-serif;max-width:40em;margin:3em auto;\
         padding:0 1em;color:#222}}h1{{font-size:1.6em}}p.why{{background:#f4f4f4;\
         padding:.8em 1em;border-radius:4px}}footer{{color:#777;font-size:.9em}}</style>\
         </head><body><h1>{title}</h1><p class=\"why\">{}</p><footer>hoard, a caching \
         proxy · request id <code>{}</code></footer></body></html>\n",
        crate::html::escape(reason),
        crate::html::escape(&id.to_string())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browsers_get_an_escaped_html_page_and_others_plain_text() {
        let mut browser = http::HeaderMap::new();
        browser.insert(
            http::header::ACCEPT,
            "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"
                .parse()
                .unwrap(),
        );
        assert!(wants_html(&browser));
        assert!(!wants_html(&http::HeaderMap::new()));
        let page = error_page(
            "502 Bad Gateway",
            "cannot connect to <evil>&\"'",
            &RequestId::Made(0xabc),
        );
        assert!(page.contains("request id <code>0000000000000abc</code>"));
        assert!(page.contains("<h1>502 Bad Gateway</h1>"), "{page}");
        assert!(
            page.contains("cannot connect to &lt;evil&gt;&amp;&quot;&#39;"),
            "{page}"
        );
        assert!(!page.contains("<evil>"));
    }
}
