//! The admin interface on the proxy port, for clients in `--admin-allow`: `/_hoard/` (an HTML
//! status page with a chart of the last 30 minutes), `/_hoard/metrics` (Prometheus text),
//! `/_hoard/stats` (JSON), `POST /_hoard/purge?url=...|prefix=...|group=...`, and the
//! `PURGE` method (`curl -X PURGE -x hoard http://site/path`).
//!
//! It reads the cache and the metrics and removes cache entries; it never proxies.

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
    /// `/_hoard/`: the HTML status page.
    Status,
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
        (&Method::GET | &Method::HEAD, "/_hoard/" | "/_hoard") => Ok(AdminRequest::Status),
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
) -> Response<ProxyBody> {
    match request {
        AdminRequest::Status => respond(
            StatusCode::OK,
            "text/html; charset=utf-8",
            status_page(cache, metrics, fleet),
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

/// The main numbers and a chart of the last 30 minutes (requests per second and hit ratio per
/// 10 s), as one self-contained page: inline SVG, no scripts, no CDN; it reloads every 10 s.
fn status_page(cache: &Cache, metrics: &Metrics, fleet: Option<&Fleet>) -> String {
    let stats = metrics.stats(cache, fleet);
    let number = |path: &[&str]| {
        let mut value = &stats;
        for key in path {
            value = &value[*key];
        }
        value.as_u64().unwrap_or(0)
    };
    let (hits, misses) = (number(&["cache", "hits"]), number(&["cache", "misses"]));
    let ratio = if hits + misses > 0 {
        100.0 * hits as f64 / (hits + misses) as f64
    } else {
        0.0
    };
    let rows = [
        ("requests", number(&["requests"]).to_string()),
        (
            "cache hits / misses",
            format!("{hits} / {misses} ({ratio:.1}% hits)"),
        ),
        (
            "bytes from cache / origin",
            format!(
                "{} / {}",
                number(&["cache", "bytes_from_cache"]),
                number(&["cache", "bytes_from_origin"])
            ),
        ),
        ("cached URLs", number(&["cache", "urls"]).to_string()),
        (
            "memory tier",
            format!(
                "{} bytes in {} bodies",
                number(&["cache", "memory", "bytes"]),
                number(&["cache", "memory", "objects"])
            ),
        ),
        (
            "disk tier",
            format!(
                "{} bytes in {} bodies",
                number(&["cache", "disk", "bytes"]),
                number(&["cache", "disk", "objects"])
            ),
        ),
        (
            "evictions / corrupt bodies",
            format!(
                "{} / {}",
                number(&["cache", "evictions"]),
                number(&["cache", "corrupt_bodies"])
            ),
        ),
        (
            "open connections",
            stats["open_connections"].as_i64().unwrap_or(0).to_string(),
        ),
    ];
    let table: String = rows
        .iter()
        .map(|(name, value)| format!("<tr><th>{name}</th><td>{value}</td></tr>"))
        .collect();

    let fleet_table = fleet.map_or_else(String::new, fleet_table);
    let series = metrics.timeline();
    let (width, height) = (720.0, 160.0);
    let step = width / (series.len().max(2) - 1) as f64;
    let peak = series
        .iter()
        .map(|(requests, _)| *requests)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let points = |value: &dyn Fn(u64, u64) -> f64| -> String {
        series
            .iter()
            .enumerate()
            .map(|(i, (requests, hits))| {
                format!(
                    "{:.1},{:.1}",
                    i as f64 * step,
                    height - value(*requests, *hits) * height
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let rate = points(&|requests, _| requests as f64 / peak);
    let hit_ratio = points(&|requests, hits| {
        if requests > 0 {
            hits as f64 / requests as f64
        } else {
            0.0
        }
    });
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="10">
<title>hoard status</title><style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:48em}}
th{{text-align:left;padding-right:2em;font-weight:normal;color:#555}}svg{{border:1px solid #ddd;background:#fafafa}}
.rate{{stroke:#1f77b4}}.ratio{{stroke:#2ca02c}}polyline{{fill:none;stroke-width:1.5}}</style></head><body>
<h1>hoard</h1><table>{table}</table>
{fleet_table}<h2>Last 30 minutes</h2>
<p><span style="color:#1f77b4">requests per 10 s</span> (peak {peak}) and <span style="color:#2ca02c">hit ratio</span> (0–100%)</p>
<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="requests and hit ratio">
<polyline class="rate" points="{rate}"/><polyline class="ratio" points="{hit_ratio}"/></svg>
<p><a href="/_hoard/metrics">metrics</a> · <a href="/_hoard/stats">stats (JSON)</a></p></body></html>
"#
    )
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
    respond(status, "application/json", answer.to_string())
}

fn respond(status: StatusCode, content_type: &'static str, text: String) -> Response<ProxyBody> {
    body::generated(status, content_type, text)
}

/// The fleet's members: each one's health and share of the keys.
fn fleet_table(fleet: &Fleet) -> String {
    let rows: String = fleet
        .status()
        .iter()
        .map(|member| {
            format!(
                "<tr><th>{}{}</th><td>{}</td><td>{:.1}% of keys</td></tr>",
                member.name,
                if member.is_self { " (this node)" } else { "" },
                if member.up { "up" } else { "down" },
                member.share * 100.0
            )
        })
        .collect();
    format!("<h2>Fleet</h2><table>{rows}</table>\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pages_and_purges() {
        let none = HeaderMap::new();
        let get = |path: &str| parse(&Method::GET, &path.parse().unwrap(), &none, None);
        assert_eq!(get("/_hoard/"), Ok(AdminRequest::Status));
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
