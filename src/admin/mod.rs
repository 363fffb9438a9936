//! The admin interface on the proxy port, for clients in `--admin-allow`: `/_hoard/` (an HTML
//! status page with a chart of the last 30 minutes), `/_hoard/metrics` (Prometheus text),
//! `/_hoard/stats` (JSON), `POST /_hoard/purge?url=...|prefix=...|group=...`, and the
//! `PURGE` method (`curl -X PURGE -x hoard http://site/path`).
//!
//! It reads the cache and the metrics and removes cache entries; it never proxies.

mod status;

pub use status::{About, PAGE_SIZE, StatusQuery};

use http::{HeaderMap, Method, Response, StatusCode, Uri};

use crate::body::{self, ProxyBody};
use crate::cache::Cache;
use crate::fleet::{Fleet, PeerError};
use crate::metrics::{Exposition, Metrics};

/// The path prefix that belongs to hoard itself.
pub const PREFIX: &str = "/_hoard/";

/// What an admin request asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum AdminRequest {
    /// `/_hoard/`: the HTML status page, searched and paged by its query.
    Status(StatusQuery),
    /// `/_hoard/metrics`, in the format the scraper's `Accept` prefers.
    Metrics(Exposition),
    Stats,
    /// Forget the stored responses of this URL.
    PurgeUrl(Uri),
    /// Forget every stored URL starting with this.
    PurgePrefix(String),
    /// Forget every stored response in this cache group (RFC 9875) of this origin, or of
    /// every origin.
    PurgeGroup {
        group: String,
        origin: Option<String>,
    },
}

impl AdminRequest {
    /// Whether this request removes stored responses.
    pub fn is_purge(&self) -> bool {
        matches!(
            self,
            AdminRequest::PurgeUrl(_)
                | AdminRequest::PurgePrefix(_)
                | AdminRequest::PurgeGroup { .. }
        )
    }

    /// A purge as the query of `/_hoard/purge` (how members are given it); `None` for a
    /// request that is not a purge.
    pub fn purge_query(&self) -> Option<String> {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        match self {
            AdminRequest::PurgeUrl(uri) => query.append_pair("url", &uri.to_string()),
            AdminRequest::PurgePrefix(prefix) => query.append_pair("prefix", prefix),
            AdminRequest::PurgeGroup { group, origin } => {
                query.append_pair("group", group);
                if let Some(origin) = origin {
                    query.append_pair("origin", origin);
                }
                &mut query
            }
            _ => return None,
        };
        Some(query.finish())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AdminError {
    #[error("no such admin page: {0}")]
    NotFound(String),
    #[error(
        "purge needs ?url=ABSOLUTE-URL, ?prefix=URL-PREFIX or ?group=NAME (with \
         &origin=https://HOST to purge the group of one origin)"
    )]
    PurgeTarget,
    /// A known admin page asked for with a method it does not answer (a purge is a POST, so
    /// a link or a prefetch can never purge).
    #[error("{page} answers {allowed} only")]
    WrongMethod {
        page: &'static str,
        allowed: &'static str,
    },
}

impl AdminError {
    fn read_only(page: &'static str) -> AdminError {
        AdminError::WrongMethod {
            page,
            allowed: "GET, HEAD",
        }
    }
}

/// Classifies a request already known to be for the admin interface. `purge_target` is the
/// absolute URL a `PURGE` names (the proxy resolves it like any request target).
pub fn parse(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    purge_target: Option<Uri>,
) -> Result<AdminRequest, AdminError> {
    if method.as_str() == "PURGE" {
        return purge_target
            .map(AdminRequest::PurgeUrl)
            .ok_or(AdminError::PurgeTarget);
    }
    match (method, uri.path()) {
        (&Method::GET | &Method::HEAD, "/_hoard/" | "/_hoard") => {
            Ok(AdminRequest::Status(StatusQuery::parse(uri.query())))
        }
        (&Method::GET | &Method::HEAD, "/_hoard/metrics") => {
            Ok(AdminRequest::Metrics(Exposition::from_accept(headers)))
        }
        (&Method::GET | &Method::HEAD, "/_hoard/stats") => Ok(AdminRequest::Stats),
        (&Method::POST, "/_hoard/purge") => {
            let query = uri.query().unwrap_or("");
            let pairs = url::form_urlencoded::parse(query.as_bytes());
            if let Some((_, group)) = pairs
                .clone()
                .find(|(name, value)| name == "group" && !value.is_empty())
            {
                let origin = match pairs.clone().find(|(name, _)| name == "origin") {
                    Some((_, origin)) => Some(
                        crate::cache::groups::normalised_origin(&origin)
                            .ok_or(AdminError::PurgeTarget)?,
                    ),
                    None => None,
                };
                return Ok(AdminRequest::PurgeGroup {
                    group: group.into_owned(),
                    origin,
                });
            }
            for (name, value) in pairs {
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
        (_, "/_hoard/" | "/_hoard") => Err(AdminError::read_only("/_hoard/")),
        (_, "/_hoard/metrics") => Err(AdminError::read_only("/_hoard/metrics")),
        (_, "/_hoard/stats") => Err(AdminError::read_only("/_hoard/stats")),
        (_, "/_hoard/purge") => Err(AdminError::WrongMethod {
            page: "/_hoard/purge",
            allowed: "POST",
        }),
        (_, path) => Err(AdminError::NotFound(path.to_owned())),
    }
}

/// Answers an admin request (a purge here only: `purged_in_fleet` reports one given to the
/// whole fleet).
pub fn answer(
    request: AdminRequest,
    cache: &Cache,
    metrics: &Metrics,
    fleet: Option<&Fleet>,
    about: &About,
) -> Response<ProxyBody> {
    match request {
        AdminRequest::Status(query) => respond(
            StatusCode::OK,
            "text/html; charset=utf-8",
            status::page(&query, cache, metrics, fleet, about),
        ),
        AdminRequest::Metrics(format) => respond(
            StatusCode::OK,
            format.content_type(),
            metrics.render(cache, fleet, format),
        ),
        AdminRequest::Stats => respond(
            StatusCode::OK,
            "application/json",
            metrics.stats(cache, fleet).to_string(),
        ),
        AdminRequest::PurgeUrl(_)
        | AdminRequest::PurgePrefix(_)
        | AdminRequest::PurgeGroup { .. } => purged_in_fleet(purge(&request, cache), &[]),
    }
}

/// Applies a purge to this node's cache; how many entries it removed (0 for other
/// requests).
pub fn purge(request: &AdminRequest, cache: &Cache) -> usize {
    match request {
        AdminRequest::PurgeUrl(uri) => cache.purge(uri),
        AdminRequest::PurgePrefix(prefix) => cache.purge_prefix(prefix),
        AdminRequest::PurgeGroup { group, origin } => cache.purge_group(origin.as_deref(), group),
        _ => 0,
    }
}

/// Like Squid, 404 when there was nothing to purge, here or at any other member; the JSON
/// says what each member did (`"fleet": {"http://10.0.0.6:8080": 1, ...: "error: ..."}`).
pub fn purged_in_fleet(
    here: usize,
    others: &[(String, Result<StatusCode, PeerError>)],
) -> Response<ProxyBody> {
    let found_elsewhere = others
        .iter()
        .any(|(_, result)| matches!(result, Ok(status) if *status == StatusCode::OK));
    let status = if here > 0 || found_elsewhere {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    };
    let mut answer = serde_json::json!({ "purged": here });
    if !others.is_empty() {
        let fleet: serde_json::Map<String, serde_json::Value> = others
            .iter()
            .map(|(member, result)| {
                let value = match result {
                    Ok(StatusCode::OK) => "purged".into(),
                    Ok(StatusCode::NOT_FOUND) => "nothing stored".into(),
                    Ok(other) => format!("answered {other}").into(),
                    Err(e) => format!("error: {e}").into(),
                };
                (member.clone(), value)
            })
            .collect();
        answer["fleet"] = fleet.into();
    }
    let mut response = respond(status, "application/json", answer.to_string());
    response.extensions_mut().insert(Purged(here));
    response
}

fn respond(status: StatusCode, content_type: &'static str, text: String) -> Response<ProxyBody> {
    body::generated(status, content_type, text)
}

/// A purge's answer for a browser (a status page's purge button): back to the status page,
/// saying how many responses went, instead of the JSON a script reads.
pub fn back_to_status_page(purge_answer: Response<ProxyBody>) -> Response<ProxyBody> {
    let purged = purge_answer
        .extensions()
        .get::<Purged>()
        .map_or(0, |purged| purged.0);
    let mut response = body::generated(
        StatusCode::SEE_OTHER,
        "text/plain; charset=utf-8",
        format!("purged {purged}\n"),
    );
    if let Ok(location) = http::HeaderValue::try_from(format!("/_hoard/?purged={purged}")) {
        response
            .headers_mut()
            .insert(http::header::LOCATION, location);
    }
    response
}

/// How many responses a purge removed here, carried beside its JSON answer.
#[derive(Debug, Clone, Copy)]
struct Purged(usize);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pages_and_purges() {
        let none = HeaderMap::new();
        let get = |path: &str| parse(&Method::GET, &path.parse().unwrap(), &none, None);
        assert_eq!(
            get("/_hoard/?q=img"),
            Ok(AdminRequest::Status(StatusQuery::parse(Some("q=img"))))
        );
        assert_eq!(
            get("/_hoard/metrics"),
            Ok(AdminRequest::Metrics(Exposition::Prometheus))
        );
        assert_eq!(get("/_hoard/stats"), Ok(AdminRequest::Stats));
        assert!(matches!(get("/_hoard/nope"), Err(AdminError::NotFound(_))));
        let post = |path: &str| parse(&Method::POST, &path.parse().unwrap(), &none, None);
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
        assert_eq!(
            get("/_hoard/purge?url=http%3A%2F%2Fa.example%2Fx").map(drop),
            Err(AdminError::WrongMethod {
                page: "/_hoard/purge",
                allowed: "POST"
            })
        );
        assert_eq!(
            post("/_hoard/stats").map(drop),
            Err(AdminError::WrongMethod {
                page: "/_hoard/stats",
                allowed: "GET, HEAD"
            })
        );
        let purge = Method::from_bytes(b"PURGE").unwrap();
        assert_eq!(
            parse(&purge, &"/x".parse().unwrap(), &none, None),
            Err(AdminError::PurgeTarget)
        );
    }
}
