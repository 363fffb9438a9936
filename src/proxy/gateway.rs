//! The path-prefix gateway: `http://hoard/www.example.com/page` fetches
//! `http://www.example.com/page`, so a plain browser can use hoard without proxy settings.
//!
//! This file decides which origin URL a gateway request means (from its path, its `Referer`, or
//! the site this client used last) and maps origin URLs back into gateway paths, as functions
//! that fetch nothing; `Proxy::gateway` at the end puts them together with the fetch. It does
//! not touch bodies (`rewrite.rs` does).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use quick_cache::sync::Cache;

use super::{OriginClient, ProxyError, Rules};
use crate::body::{self, ProxyBody};
use crate::exchange::Exchange;
use crate::http1::RequestBody;

/// What an origin-form request to hoard (with no `--upstream`) asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum GatewayRequest {
    /// `/`: the page that explains the gateway.
    Landing,
    /// `/?url=...`, the landing page's form: redirect to this gateway path.
    Form(String),
    /// A request for this origin URL.
    Target { uri: Uri, site: Site },
    /// Nothing says which site is meant.
    Unknown,
}

/// An origin (scheme and authority) as the gateway names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    https: bool,
    authority: String,
}

impl Site {
    /// The gateway path prefix: `/www.example.com` for http, `/https://www.example.com` for
    /// https.
    pub fn prefix(&self) -> String {
        if self.https {
            format!("/https://{}", self.authority)
        } else {
            format!("/{}", self.authority)
        }
    }

    /// `https://www.example.com` or `http://www.example.com:8080`.
    pub fn origin(&self) -> String {
        format!(
            "{}://{}",
            if self.https { "https" } else { "http" },
            self.authority
        )
    }
}

/// The site each client address used last, for requests that name no site and carry no
/// `Referer` (a browser's `/favicon.ico`). Bounded, and safe under concurrency (one
/// global slot would send one client's favicon to another's site).
pub struct RecentSites {
    /// Per client, the sites it browsed, the latest first (at most `RECENT_PER_CLIENT`).
    by_client: Cache<IpAddr, Arc<Vec<Site>>>,
}

/// How many sites the start page lists for a client.
const RECENT_PER_CLIENT: usize = 8;

impl Default for RecentSites {
    fn default() -> Self {
        RecentSites {
            by_client: Cache::new(10_000),
        }
    }
}

impl RecentSites {
    pub fn remember(&self, client: IpAddr, site: &Site) {
        let mut sites = vec![site.clone()];
        if let Some(earlier) = self.by_client.get(&client) {
            sites.extend(earlier.iter().filter(|s| *s != site).cloned());
        }
        sites.truncate(RECENT_PER_CLIENT);
        self.by_client.insert(client, Arc::new(sites));
    }

    /// The site this client browsed last.
    fn get(&self, client: IpAddr) -> Option<Site> {
        self.by_client.get(&client)?.first().cloned()
    }

    /// The sites this client browsed, latest first: only its own, never another client's.
    pub fn of(&self, client: IpAddr) -> Arc<Vec<Site>> {
        self.by_client.get(&client).unwrap_or_default()
    }
}

/// Decides what an origin-form request means. Rules, in order:
/// 1. `/` is the landing page (`/?url=...` its form);
/// 2. `/HOST[:PORT]/path`, `/http://HOST/path` and `/https://HOST/path` name the site;
/// 3. otherwise the path belongs to the site of the `Referer`, when that points into this
///    gateway;
/// 4. otherwise to the site this client address visited last;
/// 5. otherwise it is unknown (a 400 page explains the form).
pub fn classify(
    uri: &Uri,
    headers: &HeaderMap,
    client: IpAddr,
    recent: &RecentSites,
) -> GatewayRequest {
    let path = uri.path();
    if path == "/" {
        return match uri.query().and_then(form_url) {
            Some(target) => GatewayRequest::Form(target),
            None => GatewayRequest::Landing,
        };
    }
    let path_and_query = uri.path_and_query().map_or(path, |pq| pq.as_str());
    if let Some((uri, site)) = parse_gateway_path(path_and_query) {
        return GatewayRequest::Target { uri, site };
    }
    let site = referer_site(headers).or_else(|| recent.get(client));
    match site {
        Some(site) => match format!("{}{}", site.origin(), path_and_query).parse() {
            Ok(uri) => GatewayRequest::Target { uri, site },
            Err(_) => GatewayRequest::Unknown,
        },
        None => GatewayRequest::Unknown,
    }
}

/// `/www.example.com/x?y` → `http://www.example.com/x?y`; `/https://h/x` → `https://h/x`.
fn parse_gateway_path(path_and_query: &str) -> Option<(Uri, Site)> {
    let rest = path_and_query.strip_prefix('/')?;
    let lower = rest.get(..8).unwrap_or(rest).to_ascii_lowercase();
    // Some clients collapse `//` in paths, so `/http:/host` is accepted too.
    let (https, rest) = if lower.starts_with("https:/") {
        (true, rest[7..].trim_start_matches('/'))
    } else if lower.starts_with("http:/") {
        (false, rest[6..].trim_start_matches('/'))
    } else {
        (false, rest)
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, remainder) = rest.split_at(end);
    if !plausible_authority(authority) {
        return None;
    }
    let site = Site {
        https,
        authority: authority.to_ascii_lowercase(),
    };
    let path = if remainder.starts_with('/') {
        remainder.to_owned()
    } else {
        format!("/{remainder}")
    };
    let uri = format!("{}{}", site.origin(), path).parse().ok()?;
    Some((uri, site))
}

/// Extensions that end file names far more often than host names: `/logo.png` is a file of
/// the current site, not the host `logo.png`.
const FILE_EXTENSIONS: &[&str] = &[
    "png", "jpg", "jpeg", "gif", "ico", "svg", "webp", "avif", "bmp", "css", "js", "mjs", "map",
    "html", "htm", "xhtml", "php", "asp", "aspx", "jsp", "cgi", "json", "xml", "txt", "pdf",
    "woff", "woff2", "ttf", "otf", "eot", "mp3", "mp4", "webm", "ogg", "wasm", "gz", "zip", "tar",
];

/// A host name with a dot (and a top-level label that is not a file extension), `localhost`,
/// or an IP literal; optionally with a port. Nothing else is guessed at.
fn plausible_authority(authority: &str) -> bool {
    if authority.is_empty() || authority.contains('@') {
        return false;
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, _)) if !host.ends_with(']') && host.contains(':') => (authority, None),
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    if port.is_some_and(|p| p.parse::<u16>().is_err()) {
        return false;
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6.parse::<Ipv6Addr>().is_ok();
    }
    if host.eq_ignore_ascii_case("localhost") || host.parse::<Ipv4Addr>().is_ok() {
        return true;
    }
    let labels: Vec<&str> = host.split('.').collect();
    let valid_label = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let Some(top) = labels.last() else {
        return false;
    };
    labels.len() >= 2
        && labels.iter().all(valid_label)
        && top.len() >= 2
        && top.bytes().all(|b| b.is_ascii_alphabetic())
        && !FILE_EXTENSIONS.contains(&top.to_ascii_lowercase().as_str())
}

/// The site of a `Referer` that points into this gateway (same authority as the request's
/// `Host`).
fn referer_site(headers: &HeaderMap) -> Option<Site> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let referer: Uri = headers.get(header::REFERER)?.to_str().ok()?.parse().ok()?;
    if !referer.authority()?.as_str().eq_ignore_ascii_case(host) {
        return None;
    }
    let path = referer.path_and_query()?.as_str();
    parse_gateway_path(path).map(|(_, site)| site)
}

/// The landing page's form sends `/?url=www.example.com/x` (or a full URL).
fn form_url(query: &str) -> Option<String> {
    let value = url::form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "url")
        .map(|(_, value)| value.trim().to_owned())?;
    if value.is_empty() {
        return None;
    }
    let gateway = to_gateway_path(&value, "http").unwrap_or_else(|| format!("/{value}"));
    parse_gateway_path(&gateway).map(|_| gateway)
}

/// Maps an absolute (`http://h/x`, `https://h/x`) or protocol-relative (`//h/x`) URL to its
/// gateway path (`/h/x`, `/https://h/x`); other URLs (relative ones) are `None`, as they
/// already resolve inside the gateway.
pub fn to_gateway_path(url: &str, page_scheme: &str) -> Option<String> {
    let url = url.trim();
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    let (https, rest) = if lower.starts_with("https://") {
        (true, &url[8..])
    } else if lower.starts_with("http://") {
        (false, &url[7..])
    } else if let Some(rest) = url.strip_prefix("//") {
        (page_scheme == "https", rest)
    } else {
        return None;
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, remainder) = rest.split_at(end);
    if authority.is_empty() {
        return None;
    }
    let site = Site {
        https,
        authority: authority.to_ascii_lowercase(),
    };
    let remainder = if remainder.starts_with('/') {
        remainder.to_owned()
    } else {
        format!("/{remainder}")
    };
    Some(format!("{}{remainder}", site.prefix()))
}

/// Maps a gateway `Referer` back to the origin URL it stands for, so the origin sees a
/// `Referer` of its own.
pub fn origin_referer(headers: &HeaderMap) -> Option<String> {
    let referer: Uri = headers.get(header::REFERER)?.to_str().ok()?.parse().ok()?;
    let (uri, _) = parse_gateway_path(referer.path_and_query()?.as_str())?;
    Some(uri.to_string())
}

/// A navigation (a page the person opened), as opposed to a sub-resource: only these update
/// the client's last site, so an image from a second site does not capture the favicon.
pub fn is_navigation(headers: &HeaderMap) -> bool {
    if let Some(mode) = headers.get("sec-fetch-mode") {
        return mode == "navigate";
    }
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

/// An HTML page hoard serves itself (never cached by anyone).
pub fn page(status: StatusCode, html: &'static str) -> Response<ProxyBody> {
    body::generated(status, "text/html; charset=utf-8", html)
}

/// The landing form's answer: go to the gateway path.
pub fn redirect(path: &str) -> Response<ProxyBody> {
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::FOUND;
    if let Ok(location) = HeaderValue::from_str(path) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// The 400 page for a path that names no site.
pub const USAGE_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>hoard: which site?</title></head>
<body><h1>Which site?</h1>
<p>This path does not name a site, and nothing (no <code>Referer</code> from a gateway page, no
earlier visit) says which site it belongs to. Put the site first:
<code>/www.example.com/path</code> or <code>/https://www.example.com/path</code>.</p>
<p><a href="/">Type a URL</a></p></body></html>
"#;

impl super::Proxy {
    /// The path-prefix gateway: work out the origin URL, fetch it like a forward request
    /// (same cache, same logging), and rewrite the response so the browser stays inside.
    pub(super) async fn gateway(
        &self,
        rules: &Rules,
        mut request: Request<RequestBody>,
        origin: &Arc<OriginClient>,
        exchange: &mut Exchange,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let client = exchange.client;
        let classified = classify(
            request.uri(),
            request.headers(),
            client.ip(),
            &self.recent_sites,
        );
        let (uri, site) = match classified {
            GatewayRequest::Landing => {
                let page = super::landing::page(
                    request.headers().get(header::HOST),
                    &self.listening,
                    &self.recent_sites.of(client.ip()),
                );
                return Ok(body::generated(
                    http::StatusCode::OK,
                    "text/html; charset=utf-8",
                    page,
                ));
            }
            GatewayRequest::Form(path) => return Ok(redirect(&path)),
            GatewayRequest::Unknown => return Err(ProxyError::GatewayUsage),
            GatewayRequest::Target { uri, site } => (uri, site),
        };
        if is_navigation(request.headers()) {
            self.recent_sites.remember(client.ip(), &site);
        }
        let page_url = url::Url::parse(&uri.to_string())
            .map_err(|_| ProxyError::BadRequest("invalid gateway URL"))?;
        // The origin sees its own URLs, not gateway paths.
        let headers = request.headers_mut();
        match origin_referer(headers).and_then(|r| HeaderValue::from_str(&r).ok()) {
            Some(referer) => headers.insert(header::REFERER, referer),
            None => headers.remove(header::REFERER),
        };
        if headers.contains_key(header::ORIGIN)
            && let Ok(origin) = HeaderValue::from_str(&page_url.origin().ascii_serialization())
        {
            headers.insert(header::ORIGIN, origin);
        }
        // The access log names the site and page fetched, not the gateway path.
        exchange.uri = uri.clone();
        *request.uri_mut() = uri;
        let forward = self.forward_request(rules, request, client)?;
        let (response, final_url) = self
            .fetch_following(forward, page_url, rules.follow_redirects, origin, exchange)
            .await?;
        Ok(super::rewrite::gateway_response(response, &final_url))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn classify_path(path: &str, headers: &HeaderMap) -> GatewayRequest {
        classify(
            &path.parse().unwrap(),
            headers,
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            &RecentSites::default(),
        )
    }

    fn target(path: &str) -> Option<String> {
        match classify_path(path, &HeaderMap::new()) {
            GatewayRequest::Target { uri, .. } => Some(uri.to_string()),
            _ => None,
        }
    }

    #[test]
    fn paths_name_sites() {
        assert_eq!(
            target("/www.example.com/a/b?c=d").as_deref(),
            Some("http://www.example.com/a/b?c=d")
        );
        assert_eq!(
            target("/www.example.com").as_deref(),
            Some("http://www.example.com/")
        );
        assert_eq!(
            target("/127.0.0.1:8081/x").as_deref(),
            Some("http://127.0.0.1:8081/x")
        );
        assert_eq!(
            target("/localhost:3000/").as_deref(),
            Some("http://localhost:3000/")
        );
        assert_eq!(
            target("/[::1]:8080/v6").as_deref(),
            Some("http://[::1]:8080/v6")
        );
        assert_eq!(
            target("/http://Example.COM/x").as_deref(),
            Some("http://example.com/x")
        );
        assert_eq!(
            target("/https://example.com/x").as_deref(),
            Some("https://example.com/x")
        );
        assert_eq!(
            target("/https:/example.com/x").as_deref(),
            Some("https://example.com/x")
        );
    }

    #[test]
    fn implausible_first_segments_are_not_guessed() {
        for path in [
            "/logo.png",
            "/favicon.ico",
            "/images/a.png",
            "/style.css",
            "/a",
            "/x.y-/z",
            "/exa_mple.com/",
            "/h:99999/",
        ] {
            assert_eq!(target(path), None, "{path}");
        }
    }

    #[test]
    fn referer_then_recent_site_resolve_bare_paths() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("localhost:8080"));
        headers.insert(
            header::REFERER,
            HeaderValue::from_static("http://localhost:8080/www.example.com/dir/page.html"),
        );
        match classify_path("/logo.png", &headers) {
            GatewayRequest::Target { uri, .. } => {
                assert_eq!(uri, "http://www.example.com/logo.png")
            }
            other => panic!("{other:?}"),
        }
        // A Referer from another host is not ours.
        headers.insert(header::HOST, HeaderValue::from_static("other:1"));
        assert_eq!(
            classify_path("/logo.png", &headers),
            GatewayRequest::Unknown
        );

        let recent = RecentSites::default();
        let client = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7));
        let (_, site) = parse_gateway_path("/https://secure.example/").unwrap();
        recent.remember(client, &site);
        match classify(
            &"/favicon.ico".parse().unwrap(),
            &HeaderMap::new(),
            client,
            &recent,
        ) {
            GatewayRequest::Target { uri, .. } => {
                assert_eq!(uri, "https://secure.example/favicon.ico")
            }
            other => panic!("{other:?}"),
        }
        let stranger = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 8));
        assert_eq!(
            classify(
                &"/favicon.ico".parse().unwrap(),
                &HeaderMap::new(),
                stranger,
                &recent
            ),
            GatewayRequest::Unknown
        );
    }

    #[test]
    fn landing_page_and_form() {
        assert_eq!(
            classify_path("/", &HeaderMap::new()),
            GatewayRequest::Landing
        );
        assert_eq!(
            classify_path("/?url=www.example.com%2Fx", &HeaderMap::new()),
            GatewayRequest::Form("/www.example.com/x".into())
        );
        assert_eq!(
            classify_path("/?url=https%3A%2F%2Fexample.com%2F", &HeaderMap::new()),
            GatewayRequest::Form("/https://example.com/".into())
        );
        assert_eq!(
            classify_path("/?url=nonsense", &HeaderMap::new()),
            GatewayRequest::Landing
        );
    }

    #[test]
    fn absolute_urls_map_to_gateway_paths() {
        assert_eq!(
            to_gateway_path("http://www.example.com/new", "http").as_deref(),
            Some("/www.example.com/new")
        );
        assert_eq!(
            to_gateway_path("HTTPS://Secure.example/x?y#z", "http").as_deref(),
            Some("/https://secure.example/x?y#z")
        );
        assert_eq!(
            to_gateway_path("//cdn.example/lib.js", "https").as_deref(),
            Some("/https://cdn.example/lib.js")
        );
        assert_eq!(
            to_gateway_path("http://h.example", "http").as_deref(),
            Some("/h.example/")
        );
        assert_eq!(to_gateway_path("/relative", "http"), None);
        assert_eq!(to_gateway_path("mailto:a@b", "http"), None);
    }
}
