//! The request path: decide the mode from the configuration and the listener (forward,
//! CONNECT, reverse, gateway, admin), check the head (`guard.rs`), apply the access `Rules`
//! (`rules.rs`), rewrite the heads between hops (`headers.rs`, `reverse.rs`), and hand the
//! request to the cache, which answers it from storage or through `OriginClient`
//! (`origin.rs`) from the origin. Clients outside `--local-clients` get an origin client
//! held to the safe destination defaults.
//!
//! This module owns client-facing responses, including every error response (`error.rs`).
//! It must not open origin connections itself except for CONNECT tunnels, which carry opaque
//! bytes; HTTP to origins goes through `upstream/`.

pub mod auth;
mod error;
pub mod gateway;
mod guard;
pub mod headers;
mod origin;
mod reverse;
mod rewrite;
mod rules;
mod tunnel;

pub use error::{ErrorSource, ProxyError};
pub use origin::OriginClient;
pub use rules::Rules;
pub use tunnel::{ConnectionSlot, TunnelClosed, TunnelEnd};

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Method, Request, Response, Uri, Version};
use hyper::body::Incoming;

use crate::admin;
use crate::body::{self, ProxyBody};
use crate::cache::Cache;
use crate::config::{Config, Mode};
use crate::logging;
use crate::metrics::{Metrics, RequestMode};
use crate::upstream::{DestinationPolicy, UpstreamClient, UpstreamError, canonical};
use gateway::{GatewayRequest, RecentSites};
use headers::ViaEntry;

/// Redirects hoard follows itself with `--follow-redirects` (the gateway's, as the seed did).
const MAX_REDIRECTS: usize = 10;

/// A request ready for an origin: absolute URI, end-to-end headers only, our `Via` added.
/// This is what the cache keys and stores by.
pub struct ForwardRequest {
    pub request: Request<ProxyBody>,
}

/// Which of hoard's listeners a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Proxy,
    /// `--admin-listen`: the admin interface only.
    Admin,
}

/// The client connection a request came on, made once per connection by `server`.
pub struct ClientConnection {
    /// The client's address, IPv4-mapped IPv6 as IPv4 (a dual-stack listener reports IPv4
    /// clients as `::ffff:a.b.c.d`; the access rules are written for `a.b.c.d`).
    pub peer: SocketAddr,
    pub listener: Listener,
    /// In `--local-clients`: held to `--deny-dest` only, not to the safe defaults.
    local: bool,
    /// Its `--max-connections` permit, which a CONNECT tunnel takes over.
    slot: ConnectionSlot,
}

/// Everything the request path needs, shared by all connections.
pub struct Proxy {
    mode: Mode,
    connect_timeout: std::time::Duration,
    via: ViaEntry,
    /// For clients in `--local-clients` (and every reverse-mode request, which goes to the
    /// operator's upstream): the `--deny-dest` rules only.
    local_origin: Arc<OriginClient>,
    /// For everyone else: the safe defaults too. A separate client, so their pooled
    /// connections are never shared.
    restricted_origin: Arc<OriginClient>,
    local_clients: Vec<ipnet::IpNet>,
    /// hoard's own listening addresses (an absolute-form target naming one is "us").
    listening: Vec<SocketAddr>,
    admin_listen: Option<SocketAddr>,
    /// This machine's host name, lowercase: a name the admin may be reached by.
    machine_name: Option<String>,
    tunnels: tunnel::Tunnels,
    cache: Arc<Cache>,
    recent_sites: RecentSites,
    /// The settings SIGHUP can change, swapped whole.
    rules: arc_swap::ArcSwap<Rules>,
    metrics: Arc<Metrics>,
}

impl Proxy {
    /// `listening`: the addresses hoard actually listens on (the configured port may be 0).
    pub fn new(
        config: &Config,
        cache: Arc<Cache>,
        metrics: Arc<Metrics>,
        rules: Rules,
        listening: Vec<SocketAddr>,
    ) -> Result<Self, UpstreamError> {
        let mut id = [0u8; 8];
        // A collision only matters between two hoards in one request chain; on the rare
        // failure of the OS source, the process id still distinguishes local instances.
        if getrandom::getrandom(&mut id).is_err() {
            id = u64::from(std::process::id()).to_le_bytes();
        }
        let via = ViaEntry::new(u64::from_le_bytes(id));
        let connect_to = match &config.mode {
            Mode::Reverse { upstream, .. } => Some((
                upstream.scheme().cloned().unwrap_or(Scheme::HTTP),
                upstream
                    .authority()
                    .cloned()
                    .ok_or_else(|| UpstreamError::Connect {
                        host: upstream.to_string(),
                        reason: "the upstream URL has no host".into(),
                    })?,
            )),
            Mode::Forward => None,
        };
        let origin = |restricted: bool| -> Result<Arc<OriginClient>, UpstreamError> {
            let policy = DestinationPolicy::new(
                config.deny_dest.clone(),
                config.allow_dest.clone(),
                restricted,
                listening.clone(),
            );
            Ok(Arc::new(OriginClient {
                upstream: UpstreamClient::new(config, Arc::new(policy))?,
                via: via.clone(),
                connect_to: connect_to.clone(),
                check_before_cache: restricted,
            }))
        };
        let local_origin = origin(false)?;
        // Reverse mode reaches only the operator's upstream, wherever it is.
        let restricted_origin = match config.mode {
            Mode::Reverse { .. } => local_origin.clone(),
            Mode::Forward => origin(true)?,
        };
        Ok(Proxy {
            mode: config.mode.clone(),
            connect_timeout: config.connect_timeout,
            via: via.clone(),
            local_origin,
            restricted_origin,
            local_clients: config.local_clients.clone(),
            listening,
            admin_listen: config.admin_listen,
            machine_name: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|name| name.trim().to_ascii_lowercase())
                .filter(|name| !name.is_empty()),
            tunnels: tunnel::Tunnels::default(),
            cache,
            recent_sites: RecentSites::default(),
            rules: arc_swap::ArcSwap::from_pointee(rules),
            metrics,
        })
    }

    /// Applies reloaded rules to every request from now on.
    pub fn reload(&self, rules: Rules) {
        self.rules.store(Arc::new(rules));
    }

    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    /// Ends every CONNECT tunnel (at shutdown) and waits until they have reported.
    pub async fn close_tunnels(&self) {
        self.tunnels.close().await;
    }

    /// What clients outside `--local-clients` cannot reach, for the start-up warning.
    pub fn restrictions(&self) -> String {
        self.restricted_origin
            .upstream
            .policy()
            .describe_restrictions()
    }

    /// What every request on a new client connection needs to know about it, worked out
    /// once for the connection.
    pub fn connection(
        &self,
        peer: SocketAddr,
        listener: Listener,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> ClientConnection {
        let peer = SocketAddr::new(canonical(peer.ip()), peer.port());
        ClientConnection {
            peer,
            listener,
            local: self
                .local_clients
                .iter()
                .any(|net| net.contains(&peer.ip())),
            slot: ConnectionSlot::new(Some(permit)),
        }
    }

    /// The origin client for a connection: local clients are held to `--deny-dest` only.
    fn origin_for(&self, connection: &ClientConnection) -> &Arc<OriginClient> {
        if connection.local {
            &self.local_origin
        } else {
            &self.restricted_origin
        }
    }

    /// Answers one client request, of the mode `mode_of` gave it. Never fails: errors become
    /// responses here.
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        mode: RequestMode,
        connection: &ClientConnection,
    ) -> Response<ProxyBody> {
        logging::trace_request("request from client", &request);
        let client = connection.peer;
        let response = match self.route(request, mode, client, connection).await {
            Ok(response) => response,
            Err(e) => {
                match e.source() {
                    ErrorSource::Client => tracing::info!("{client}: {e}"),
                    ErrorSource::Origin => tracing::warn!("{client}: {e}"),
                }
                if let ProxyError::Upstream(upstream) = &e
                    && e.source() == ErrorSource::Origin
                {
                    self.metrics.upstream_error(upstream.kind());
                }
                e.into_response()
            }
        };
        logging::trace_response("response to client", &response);
        response
    }

    /// How a request reached hoard (forward, reverse, gateway, tunnel, admin), for routing
    /// and for the access log and metrics.
    /// The mode comes from the configuration and the listener, never from the request
    /// alone: in reverse mode every request goes to the upstream, absolute-form or not.
    pub fn mode_of<B>(&self, request: &Request<B>, listener: Listener) -> RequestMode {
        let origin_form = request.uri().scheme().is_none();
        if listener == Listener::Admin
            || request.method().as_str() == "PURGE"
            || (origin_form && request.uri().path().starts_with(admin::PREFIX))
        {
            RequestMode::Admin
        } else if request.method() == Method::CONNECT {
            RequestMode::Connect
        } else if matches!(self.mode, Mode::Reverse { .. }) {
            RequestMode::Reverse
        } else if !origin_form {
            RequestMode::Forward
        } else {
            RequestMode::Gateway
        }
    }

    async fn route(
        &self,
        request: Request<Incoming>,
        mode: RequestMode,
        client: SocketAddr,
        connection: &ClientConnection,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        // One snapshot per request: a SIGHUP reload in the middle cannot mix two rule sets.
        let rules = self.rules.load_full();
        let allowed = |list: &[ipnet::IpNet]| list.iter().any(|net| net.contains(&client.ip()));
        // The admin listener is for `--admin-allow` clients, checked below.
        let admin_listener = connection.listener == Listener::Admin;
        if !admin_listener && !allowed(&rules.allow) {
            self.metrics.denied();
            return Err(ProxyError::Forbidden(
                "this client is not allowed to use this proxy",
            ));
        }
        guard::check_head(&request)?;
        if self.via.seen_in(request.headers()) {
            return Err(ProxyError::Loop);
        }
        let mut request = request;
        self.authenticate(&rules, &mut request, mode).await?;
        match mode {
            RequestMode::Admin => {
                if let Some(admin) = self.admin_listen
                    && !admin_listener
                {
                    return Err(ProxyError::AdminElsewhere(admin));
                }
                if !allowed(&rules.admin_allow) {
                    self.metrics.denied();
                    return Err(ProxyError::Forbidden(
                        "this client may not use the admin interface",
                    ));
                }
                // In reverse mode a PURGE's Host names the site to purge.
                let names_a_site = request.method().as_str() == "PURGE"
                    && matches!(self.mode, Mode::Reverse { .. });
                if !names_a_site {
                    guard::admin_host(
                        request.headers(),
                        self.machine_name.as_deref(),
                        &rules.server_names,
                    )?;
                }
                if !matches!(*request.method(), Method::GET | Method::HEAD) {
                    guard::same_origin(request.headers())?;
                }
                let purge_target = self.purge_target(request.uri(), request.headers());
                let admin_request = admin::parse(request.method(), request.uri(), purge_target)?;
                Ok(admin::answer(admin_request, &self.cache, &self.metrics))
            }
            // Boxed: each of these futures is several KiB, and every request's future is as
            // large as its largest branch and gets moved (copied) on its way into hyper.
            // Cache hits, the fast path, should not pay for tunnels and HTML rewriting.
            RequestMode::Connect if matches!(self.mode, Mode::Reverse { .. }) => Err(
                ProxyError::MethodNotAllowed("a reverse proxy does not open CONNECT tunnels"),
            ),
            RequestMode::Connect => {
                let settings = tunnel::TunnelSettings {
                    allowed_ports: &rules.connect_ports,
                    policy: self.origin_for(connection).upstream.policy(),
                    connect_timeout: self.connect_timeout,
                    idle_timeout: rules.tunnel_idle_timeout,
                };
                Box::pin(tunnel::open(
                    request,
                    settings,
                    &connection.slot,
                    &self.tunnels,
                ))
                .await
            }
            RequestMode::Gateway => {
                let origin = self.origin_for(connection);
                Box::pin(self.gateway(&rules, request, client, origin)).await
            }
            RequestMode::Forward | RequestMode::Reverse => {
                let forward = self.forward_request(&rules, request, client)?;
                self.fetch(forward, self.origin_for(connection)).await
            }
        }
    }

    /// With `--auth-file`, proxy requests need `Proxy-Authorization` (407) and gateway
    /// requests `Authorization` (401, which a browser asks the person for); the credential is
    /// hoard's and is not forwarded. Reverse-proxy and admin requests are not asked.
    async fn authenticate<B>(
        &self,
        rules: &Rules,
        request: &mut Request<B>,
        mode: RequestMode,
    ) -> Result<(), ProxyError> {
        let Some(users) = &rules.users else {
            return Ok(());
        };
        let (header, missing) = match mode {
            RequestMode::Forward | RequestMode::Connect => {
                (header::PROXY_AUTHORIZATION, ProxyError::ProxyAuthRequired)
            }
            RequestMode::Gateway => (header::AUTHORIZATION, ProxyError::AuthRequired),
            RequestMode::Reverse | RequestMode::Admin => return Ok(()),
        };
        let credential = request.headers_mut().remove(&header);
        let allowed = match users.remembered(credential.as_ref()) {
            Some(known) => known,
            None => {
                let users = Arc::clone(users);
                tokio::task::spawn_blocking(move || users.check(credential.as_ref()))
                    .await
                    .unwrap_or(false)
            }
        };
        if allowed {
            Ok(())
        } else {
            self.metrics.denied();
            Err(missing)
        }
    }

    /// The path-prefix gateway: work out the origin URL, fetch it like a forward request
    /// (same cache, same logging), and rewrite the response so the browser stays inside.
    async fn gateway(
        &self,
        rules: &Rules,
        mut request: Request<Incoming>,
        client: SocketAddr,
        origin: &Arc<OriginClient>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let classified = gateway::classify(
            request.uri(),
            request.headers(),
            client.ip(),
            &self.recent_sites,
        );
        let (uri, site) = match classified {
            GatewayRequest::Landing => {
                return Ok(gateway::page(http::StatusCode::OK, gateway::LANDING_PAGE));
            }
            GatewayRequest::Form(path) => return Ok(gateway::redirect(&path)),
            GatewayRequest::Unknown => return Err(ProxyError::GatewayUsage),
            GatewayRequest::Target { uri, site } => (uri, site),
        };
        if gateway::is_navigation(request.headers()) {
            self.recent_sites.remember(client.ip(), &site);
        }
        let page_url = url::Url::parse(&uri.to_string())
            .map_err(|_| ProxyError::BadRequest("invalid gateway URL"))?;
        // The origin sees its own URLs, not gateway paths.
        let headers = request.headers_mut();
        match gateway::origin_referer(headers).and_then(|r| HeaderValue::from_str(&r).ok()) {
            Some(referer) => headers.insert(header::REFERER, referer),
            None => headers.remove(header::REFERER),
        };
        if headers.contains_key(header::ORIGIN)
            && let Ok(origin) = HeaderValue::from_str(&page_url.origin().ascii_serialization())
        {
            headers.insert(header::ORIGIN, origin);
        }
        *request.uri_mut() = uri;
        let forward = self.forward_request(rules, request, client)?;
        let (response, final_url) = self
            .fetch_following(forward, page_url, rules.follow_redirects, origin)
            .await?;
        Ok(rewrite::gateway_response(response, &final_url))
    }

    /// With `--follow-redirects`, follows an origin's redirects for GET and HEAD (at most
    /// `MAX_REDIRECTS`, a loop is 508) and returns the final response and its URL.
    async fn fetch_following(
        &self,
        forward: ForwardRequest,
        mut url: url::Url,
        follow_redirects: bool,
        origin: &Arc<OriginClient>,
    ) -> Result<(Response<ProxyBody>, url::Url), ProxyError> {
        let method = forward.request.method().clone();
        if !follow_redirects || !(method == Method::GET || method == Method::HEAD) {
            return Ok((self.fetch(forward, origin).await?, url));
        }
        let headers = forward.request.headers().clone();
        let mut response = self.fetch(forward, origin).await?;
        let mut visited = vec![url.clone()];
        while response.status().is_redirection()
            && response.status() != http::StatusCode::NOT_MODIFIED
        {
            let Some(next) = response
                .headers()
                .get(header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| url.join(l).ok())
                .filter(|next| matches!(next.scheme(), "http" | "https"))
            else {
                break;
            };
            if visited.contains(&next) {
                return Err(ProxyError::RedirectLoop(next.to_string()));
            }
            if visited.len() > MAX_REDIRECTS {
                return Err(ProxyError::TooManyRedirects(MAX_REDIRECTS));
            }
            visited.push(next.clone());
            url = next;
            let uri: Uri = url
                .as_str()
                .parse()
                .map_err(|_| ProxyError::BadRequest("redirect to an invalid URL"))?;
            let host = host_value(absolute_authority(&uri)?)?;
            let mut request = Request::new(body::empty());
            *request.method_mut() = method.clone();
            *request.headers_mut() = headers.clone();
            request.headers_mut().insert(header::HOST, host);
            *request.uri_mut() = uri;
            response = self.fetch(ForwardRequest { request }, origin).await?;
        }
        Ok((response, url))
    }

    /// Turns a client's request into the request for the origin.
    fn forward_request(
        &self,
        rules: &Rules,
        request: Request<Incoming>,
        client: SocketAddr,
    ) -> Result<ForwardRequest, ProxyError> {
        let (mut parts, incoming) = request.into_parts();
        // A declared length over the limit is refused before anything is read (and before
        // hyper would send `100 Continue`); a chunked body that grows past it is cut off.
        let declared = hyper::body::Body::size_hint(&incoming).exact();
        let max_request_body = rules.max_request_body;
        if max_request_body > 0 && declared.is_some_and(|len| len > max_request_body) {
            return Err(ProxyError::BodyTooLarge(
                declared.unwrap_or(0),
                max_request_body,
            ));
        }
        headers::remove_hop_by_hop(&mut parts.headers);
        if !rules
            .trust_forwarded
            .iter()
            .any(|net| net.contains(&client.ip()))
        {
            headers::remove_untrusted_forwarding(&mut parts.headers);
        }
        // GET and HEAD bodies have no meaning, so an origin may ignore one and read it as
        // the next request on the connection: that connection is closed after this
        // exchange, and the cache neither stores nor serves such a request.
        if matches!(parts.method, Method::GET | Method::HEAD)
            && !hyper::body::Body::is_end_stream(&incoming)
        {
            if rules.reject_get_body {
                return Err(ProxyError::BadRequest(
                    "GET and HEAD requests must not carry a body",
                ));
            }
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }

        match &self.mode {
            Mode::Reverse {
                upstream,
                upstream_host,
            } => self.to_upstream(rules, &mut parts, client, upstream, upstream_host.as_ref())?,
            Mode::Forward if parts.uri.scheme().is_some() => {
                let authority = absolute_authority(&parts.uri)?;
                // Usually the client's Host already says the same: then no new value is made.
                if parts.headers.get(header::HOST).map(HeaderValue::as_bytes)
                    != Some(authority.as_str().as_bytes())
                {
                    let host = host_value(authority)?;
                    parts.headers.insert(header::HOST, host);
                }
            }
            // Gateway requests arrive here with absolute URIs; anything else names no site.
            Mode::Forward => return Err(ProxyError::GatewayUsage),
        }
        Ok(ForwardRequest {
            request: Request::from_parts(parts, limited(incoming, max_request_body)),
        })
    }

    /// The seam: every forward request goes through the cache, which decides whether the
    /// origin is asked.
    async fn fetch(
        &self,
        forward: ForwardRequest,
        origin: &Arc<OriginClient>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        origin.check_before_cache(forward.request.uri())?;
        let mut response = self.cache.serve(forward.request, origin).await?;
        self.via.append(response.headers_mut(), Version::HTTP_11);
        // The client hears hoard's own HTTP version.
        *response.version_mut() = Version::HTTP_11;
        Ok(response)
    }
}

/// The client's body, cut off with an error past `--max-request-body` (0: no limit).
fn limited(incoming: Incoming, max_request_body: u64) -> ProxyBody {
    match usize::try_from(max_request_body) {
        Ok(limit) if limit > 0 => body::stream(http_body_util::Limited::new(incoming, limit)),
        _ => body::stream(incoming),
    }
}

/// Checks an absolute-form target (RFC 9112 §3.2.2) and returns its authority.
fn absolute_authority(uri: &Uri) -> Result<&Authority, ProxyError> {
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => return Err(ProxyError::UnsupportedScheme(other.to_owned())),
        None => return Err(ProxyError::BadRequest("missing URL scheme")),
    }
    let authority = uri
        .authority()
        .ok_or(ProxyError::BadRequest("URL has no host"))?;
    let text = authority.as_str();
    if text.contains('@') {
        return Err(ProxyError::BadRequest(
            "URL must not contain user information",
        ));
    }
    // Without user information the text is the host, then the port if any.
    let host = authority.host();
    if host.is_empty() {
        return Err(ProxyError::BadRequest("URL has no host"));
    }
    // `Authority` parses an out-of-range port as no port at all; the text still has it.
    match &text[host.len()..] {
        "" | ":" => {}
        port if port.starts_with(':')
            && port[1..].bytes().all(|b| b.is_ascii_digit())
            && port[1..].parse::<u16>().is_ok_and(|port| port != 0) => {}
        _ => return Err(ProxyError::BadRequest("URL has an invalid port")),
    }
    Ok(authority)
}

fn host_value(authority: &Authority) -> Result<HeaderValue, ProxyError> {
    HeaderValue::from_str(authority.as_str()).map_err(|_| ProxyError::BadRequest("invalid host"))
}
