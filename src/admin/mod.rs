//! The admin interface on the proxy port, for clients in `--admin-allow`: `/_hoard/metrics`
//! (Prometheus text), `/_hoard/stats` (JSON), `POST /_hoard/purge?url=...|prefix=...`, and the
//! `PURGE` method (`curl -X PURGE -x hoard http://site/path`).
//!
//! It reads the cache and the metrics and removes cache entries; it never proxies.

use http::{Method, Response, StatusCode, Uri};

use crate::body::{self, ProxyBody};
use crate::cache::Cache;
use crate::metrics::Metrics;

/// The path prefix that belongs to hoard itself.
pub const PREFIX: &str = "/_hoard/";

/// What an admin request asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum AdminRequest {
    Metrics,
    Stats,
    /// Forget the stored responses of this URL.
    PurgeUrl(Uri),
    /// Forget every stored URL starting with this.
    PurgePrefix(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AdminError {
    #[error("no such admin page: {0}")]
    NotFound(String),
    #[error("purge needs ?url=ABSOLUTE-URL or ?prefix=URL-PREFIX")]
    PurgeTarget,
}

/// Classifies a request already known to be for the admin interface. `purge_target` is the
/// absolute URL a `PURGE` names (the proxy resolves it like any request target).
pub fn parse(
    method: &Method,
    uri: &Uri,
    purge_target: Option<Uri>,
) -> Result<AdminRequest, AdminError> {
    if method.as_str() == "PURGE" {
        return purge_target
            .map(AdminRequest::PurgeUrl)
            .ok_or(AdminError::PurgeTarget);
    }
    match (method, uri.path()) {
        (&Method::GET | &Method::HEAD, "/_hoard/metrics") => Ok(AdminRequest::Metrics),
        (&Method::GET | &Method::HEAD, "/_hoard/stats") => Ok(AdminRequest::Stats),
        (&Method::POST, "/_hoard/purge") => {
            let query = uri.query().unwrap_or("");
            for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
                match name.as_ref() {
                    "url" => {
                        return value
                            .parse()
                            .map(AdminRequest::PurgeUrl)
                            .map_err(|_| AdminError::PurgeTarget);
                    }
                    "prefix" if !value.is_empty() => {
                        return Ok(AdminRequest::PurgePrefix(value.into_owned()));
                    }
                    _ => {}
                }
            }
            Err(AdminError::PurgeTarget)
        }
        (_, path) => Err(AdminError::NotFound(path.to_owned())),
    }
}

/// Answers an admin request.
pub fn answer(request: AdminRequest, cache: &Cache, metrics: &Metrics) -> Response<ProxyBody> {
    match request {
        AdminRequest::Metrics => respond(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.render(cache),
        ),
        AdminRequest::Stats => respond(
            StatusCode::OK,
            "application/json",
            metrics.stats(cache).to_string(),
        ),
        AdminRequest::PurgeUrl(uri) => purged(cache.purge(&uri)),
        AdminRequest::PurgePrefix(prefix) => purged(cache.purge_prefix(&prefix)),
    }
}

/// Like Squid, 404 when there was nothing to purge.
fn purged(count: usize) -> Response<ProxyBody> {
    let status = if count > 0 {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    };
    respond(
        status,
        "application/json",
        serde_json::json!({ "purged": count }).to_string(),
    )
}

fn respond(status: StatusCode, content_type: &'static str, text: String) -> Response<ProxyBody> {
    body::generated(status, content_type, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pages_and_purges() {
        let get = |path: &str| parse(&Method::GET, &path.parse().unwrap(), None);
        assert_eq!(get("/_hoard/metrics"), Ok(AdminRequest::Metrics));
        assert_eq!(get("/_hoard/stats"), Ok(AdminRequest::Stats));
        assert!(matches!(get("/_hoard/nope"), Err(AdminError::NotFound(_))));
        let post = |path: &str| parse(&Method::POST, &path.parse().unwrap(), None);
        assert_eq!(
            post("/_hoard/purge?url=http%3A%2F%2Fa.example%2Fx"),
            Ok(AdminRequest::PurgeUrl(
                "http://a.example/x".parse().unwrap()
            ))
        );
        assert_eq!(
            post("/_hoard/purge?prefix=http://a.example/img/"),
            Ok(AdminRequest::PurgePrefix("http://a.example/img/".into()))
        );
        assert_eq!(post("/_hoard/purge"), Err(AdminError::PurgeTarget));
        let purge = Method::from_bytes(b"PURGE").unwrap();
        assert_eq!(
            parse(&purge, &"/x".parse().unwrap(), None),
            Err(AdminError::PurgeTarget)
        );
    }
}
