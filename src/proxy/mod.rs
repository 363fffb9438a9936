//! The request path: decide the mode from the configuration and the listener (forward,
//! CONNECT, reverse, gateway, admin), check the head (`guard.rs`), apply the access `Rules`
//! (`rules.rs`), rewrite the heads between hops (`headers.rs`, `reverse.rs`), and hand the
//! request to the cache (`forward.rs`), which answers it from storage or through
//! `OriginClient` (`origin.rs`) from the origin. Clients outside `--local-clients` get an
//! origin client held to the safe destination defaults. `handle` returns the response with
//! the request's `Exchange`, the record of what happened.
//!
//! This module owns client-facing responses, including every error response (`error.rs`).
//! It must not open origin connections itself except for CONNECT tunnels, which carry opaque
//! bytes; HTTP to origins goes through `upstream/`.

pub mod auth;
mod error;
mod forward;
pub mod gateway;
mod guard;
pub mod headers;
mod intercept;
mod landing;
mod origin;
mod peer;
mod reverse;
mod rewrite;
mod rules;
mod server_name;
mod settings;
mod tunnel;

pub use error::{ErrorSource, ProxyError};
pub use forward::ForwardRequest;
pub use intercept::Intercept;
pub use origin::OriginClient;
pub use rules::Rules;
pub use server_name::{InvalidServerName, ServerName};
pub use settings::{AccessSettings, Mode, ProxySettings};
pub use tunnel::{ConnectionSlot, TunnelClosed, TunnelEnd};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::http1::RequestBody;
use http::header::HeaderValue;
use http::uri::{Authority, Scheme};
use http::{Method, Request, Response};
use tracing::Instrument;

use crate::admin;
use crate::body::{self, ProxyBody, TimeLimit};
use crate::cache::Cache;
use crate::exchange::{Exchange, RequestId, RequestMode};
use crate::fleet::Fleet;
use crate::logging;
use crate::metrics::Metrics;
use crate::upstream::{DestinationPolicy, UpstreamClient, UpstreamError, canonical};
use gateway::RecentSites;
use headers::ViaEntry;

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
    /// It came over TLS (a TLS listener, or an intercepted CONNECT).
    secure: bool,
    /// An intercepted CONNECT's inside: every request is for `https://` this authority.
    intercepted: Option<Authority>,
}

impl ClientConnection {
    /// For the inside of an intercepted CONNECT, the authority the client asked for.
    pub fn intercepted(&self) -> Option<&Authority> {
        self.intercepted.as_ref()
    }
}

/// In a request's extensions when its client connection is TLS.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientTls;

/// Everything the request path needs, shared by all connections.
/// What `Proxy::handle` hands back.
pub struct Handled {
    pub response: Response<ProxyBody>,
    /// What happened, for the access log and the metrics (`status` is the response's).
    pub exchange: Exchange,
    /// For a CONNECT tunnel: how to learn when it has closed and what it carried.
    pub tunnel: Option<TunnelClosed>,
    /// For an intercepted CONNECT: the connection to answer with TLS once the 200 has gone.
    pub intercept: Option<Intercept>,
}

/// A routed request's response, and a tunnel's closing signal when it opened one.
struct Reply {
    response: Response<ProxyBody>,
    tunnel: Option<TunnelClosed>,
    intercept: Option<Intercept>,
}

impl From<Response<ProxyBody>> for Reply {
    fn from(response: Response<ProxyBody>) -> Reply {
        Reply {
            response,
            tunnel: None,
            intercept: None,
        }
    }
}

pub struct Proxy {
    mode: Mode,
    /// `--intercept` and `--intercept-skip`.
    intercept: bool,
    intercept_skip: Vec<ServerName>,
    connect_timeout: Duration,
    /// `--request-timeout`: the most one request may take, body included.
    request_timeout: Option<Duration>,
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
    /// Numbers the requests traced with `-v` (their spans' `id`).
    metrics: Arc<Metrics>,
    /// `--peers`: the fleet this node is a member of.
    fleet: Option<Arc<Fleet>>,
    /// What the status page says about this process (its address, its settings).
    about: arc_swap::ArcSwap<admin::About>,
}

impl Proxy {
    /// `listening`: the addresses hoard actually listens on (the configured port may be 0).
    pub fn new(
        config: &ProxySettings,
        cache: Arc<Cache>,
        metrics: Arc<Metrics>,
        rules: Rules,
        listening: Vec<SocketAddr>,
        fleet: Option<Arc<Fleet>>,
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
                config.upstream.deny_dest.clone(),
                config.upstream.allow_dest.clone(),
                restricted,
                listening.clone(),
            );
            Ok(Arc::new(OriginClient {
                upstream: UpstreamClient::new(&config.upstream, Arc::new(policy))?,
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
            intercept: config.intercept,
            intercept_skip: config.intercept_skip.clone(),
            connect_timeout: config.upstream.connect_timeout,
            request_timeout: config.request_timeout,
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
            fleet,
            about: arc_swap::ArcSwap::from_pointee(admin::About::default()),
        })
    }

    /// Whether a CONNECT to `target` is answered with TLS rather than tunnelled blind.
    fn intercepts(&self, target: &http::Uri) -> bool {
        self.intercept
            && !target.host().is_some_and(|host| {
                let host = reverse::host_name(host);
                self.intercept_skip.iter().any(|skip| skip.matches(&host))
            })
    }

    /// Applies reloaded rules to every request from now on.
    pub fn reload(&self, rules: Rules) {
        self.rules.store(Arc::new(rules));
    }

    /// Sets what the status page shows as the settings in effect (at start and on reload).
    pub fn describe_settings(&self, settings: String) {
        self.about.store(Arc::new(admin::About {
            listening: self.listening.clone(),
            settings,
        }));
    }

    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    pub fn fleet(&self) -> Option<&Arc<Fleet>> {
        self.fleet.as_ref()
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
    /// `secure`: the connection is TLS.
    pub fn connection(
        &self,
        peer: SocketAddr,
        listener: Listener,
        permit: tokio::sync::OwnedSemaphorePermit,
        secure: bool,
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
            secure,
            intercepted: None,
        }
    }

    /// The connection inside an intercepted CONNECT from `client` (it keeps the slot), and
    /// how to wait for the client's stream.
    pub fn intercepted(
        &self,
        client: &ClientConnection,
        intercept: Intercept,
    ) -> (ClientConnection, crate::http1::OnUpgrade) {
        let inside = ClientConnection {
            peer: client.peer,
            listener: client.listener,
            local: client.local,
            slot: ConnectionSlot::new(intercept.slot),
            secure: true,
            intercepted: Some(intercept.authority),
        };
        (inside, intercept.upgrade)
    }

    /// The origin client for a connection: local clients are held to `--deny-dest` only.
    fn origin_for(&self, connection: &ClientConnection) -> &Arc<OriginClient> {
        if connection.local {
            &self.local_origin
        } else {
            &self.restricted_origin
        }
    }

    /// Answers one client request. Never fails: errors become responses here, and the
    /// `--request-timeout` (headers and body) is applied here.
    pub async fn handle(
        &self,
        request: Request<RequestBody>,
        connection: &ClientConnection,
    ) -> Handled {
        let mut request = request;
        if connection.secure {
            request.extensions_mut().insert(ClientTls);
        }
        if let Some(authority) = &connection.intercepted {
            intercept::target(&mut request, authority);
        }
        let mode = self.mode_of(&request, connection);
        // One span per request, so that the steps of concurrent requests in `-v` output can
        // be told apart. Debug level: when it is off, no field below is even evaluated.
        let id = RequestId::of(request.headers());
        let span = tracing::debug_span!(
            "request",
            %id,
            client = %connection.peer,
            method = %request.method(),
            url = %request.uri(),
            mode = ?mode,
        );
        self.handle_in_span(request, mode, id, connection)
            .instrument(span)
            .await
    }

    async fn handle_in_span(
        &self,
        request: Request<RequestBody>,
        mode: RequestMode,
        id: RequestId,
        connection: &ClientConnection,
    ) -> Handled {
        logging::trace_request("request from client", &request);
        let mut exchange = Exchange::begin(&request, connection.peer, mode, id);
        let html = error::wants_html(request.headers());
        let routed = match self.request_timeout {
            None => self.route(request, &mut exchange, connection).await,
            Some(limit) => {
                let deadline = tokio::time::Instant::now() + limit;
                let route = self.route(request, &mut exchange, connection);
                match tokio::time::timeout_at(deadline, route).await {
                    Ok(routed) => routed.map(|mut reply| {
                        reply.response = reply.response.map(|body| {
                            body::time_limited(body, TimeLimit::Total { deadline, limit })
                        });
                        reply
                    }),
                    Err(_) => Err(ProxyError::RequestTimeout(limit)),
                }
            }
        };
        let reply = routed.unwrap_or_else(|e| {
            let (client, id) = (connection.peer, &exchange.id);
            match e.source() {
                ErrorSource::Client => {
                    tracing::info!(%client, %id, error = %e, "request refused")
                }
                ErrorSource::Origin => tracing::warn!(%client, %id, error = %e, "origin failed"),
            }
            if let ProxyError::Upstream(upstream) = &e
                && e.source() == ErrorSource::Origin
            {
                self.metrics.upstream_error(upstream.kind());
            }
            Reply::from(e.into_response(html, &exchange.id))
        });
        let mut reply = reply;
        if mode == RequestMode::Peer {
            reply.response.headers_mut().insert(
                crate::fleet::MEMBER_ANSWER,
                HeaderValue::from_static("member"),
            );
        }
        logging::trace_response("response to client", &reply.response);
        exchange.status = reply.response.status();
        Handled {
            response: reply.response,
            exchange,
            tunnel: reply.tunnel,
            intercept: reply.intercept,
        }
    }

    /// The answer to a head the client connection could not parse, with its record.
    pub fn refuse(&self, error: crate::http1::HeadError, connection: &ClientConnection) -> Handled {
        let mode = match (connection.listener, &self.mode) {
            (Listener::Admin, _) => RequestMode::Admin,
            (_, Mode::Reverse { .. }) => RequestMode::Reverse,
            _ => RequestMode::Forward,
        };
        let mut exchange = Exchange::unparsed(connection.peer, mode);
        let error = ProxyError::from(error);
        tracing::info!(client = %connection.peer, id = %exchange.id, %error, "request refused");
        // The head did not parse, so what the client accepts is not known.
        let response = error.into_response(false, &exchange.id);
        exchange.status = response.status();
        Handled {
            response,
            exchange,
            tunnel: None,
            intercept: None,
        }
    }

    /// How a request reached hoard (forward, reverse, gateway, tunnel, admin), for routing
    /// and for the access log and metrics. The mode comes from the configuration and the
    /// listener, never from the request alone: in reverse mode every request goes to the
    /// upstream, absolute-form or not.
    fn mode_of<B>(&self, request: &Request<B>, connection: &ClientConnection) -> RequestMode {
        let origin_form = request.uri().scheme().is_none();
        if connection.listener == Listener::Proxy
            && self.fleet.as_ref().is_some_and(|fleet| {
                fleet
                    .from_member(connection.peer.ip(), request.headers())
                    .is_some()
            })
        {
            RequestMode::Peer
        } else if connection.listener == Listener::Admin
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
        request: Request<RequestBody>,
        exchange: &mut Exchange,
        connection: &ClientConnection,
    ) -> Result<Reply, ProxyError> {
        let (mode, client) = (exchange.mode, exchange.client);
        // One snapshot per request: a SIGHUP reload in the middle cannot mix two rule sets.
        let rules = self.rules.load_full();

        let allowed = |list: &[ipnet::IpNet]| list.iter().any(|net| net.contains(&client.ip()));
        // The admin listener is for `--admin-allow` clients, checked below.
        let admin_listener = connection.listener == Listener::Admin;
        // A fleet member already applied the access rules to its client.
        if !admin_listener && mode != RequestMode::Peer && !allowed(&rules.allow) {
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
        // Inside an intercepted CONNECT, the CONNECT itself was authenticated.
        if connection.intercepted.is_none() {
            self.authenticate(&rules, &mut request, mode).await?;
        }
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
                if let Some(twin) = purge_target.as_ref().and_then(|t| self.https_twin(t)) {
                    self.cache.purge(&twin);
                }
                let admin_request = admin::parse(
                    request.method(),
                    request.uri(),
                    request.headers(),
                    purge_target,
                )?;
                let is_purge = admin_request.is_purge();
                let answer = Box::pin(self.answer_admin(admin_request)).await;
                // A purge button on the status page: back to the page, not to JSON.
                Ok(if is_purge && error::wants_html(request.headers()) {
                    admin::back_to_status_page(answer).into()
                } else {
                    answer.into()
                })
            }
            // Boxed: each of these futures is several KiB, and every request's future is as
            // large as its largest branch and gets moved (copied) on its way into hyper.
            // Cache hits, the fast path, should not pay for tunnels and HTML rewriting.
            RequestMode::Connect if matches!(self.mode, Mode::Reverse { .. }) => Err(
                ProxyError::MethodNotAllowed("a reverse proxy does not open CONNECT tunnels"),
            ),
            RequestMode::Connect if request.version() == http::Version::HTTP_2 => {
                Err(ProxyError::MethodNotAllowed(
                    "CONNECT is served over HTTP/1.1 only; connect to this proxy with HTTP/1.1",
                ))
            }
            RequestMode::Connect if connection.intercepted.is_some() => Err(
                ProxyError::BadRequest("CONNECT inside an intercepted connection"),
            ),
            RequestMode::Connect if self.intercepts(request.uri()) => {
                let (response, intercept) = intercept::answer(
                    request,
                    &rules.connect_ports,
                    self.origin_for(connection).upstream.policy(),
                    &connection.slot,
                )?;
                Ok(Reply {
                    response,
                    tunnel: None,
                    intercept: Some(intercept),
                })
            }
            RequestMode::Connect => {
                let settings = tunnel::TunnelSettings {
                    allowed_ports: &rules.connect_ports,
                    policy: self.origin_for(connection).upstream.policy(),
                    parent: self.origin_for(connection).upstream.parent(),
                    connect_timeout: self.connect_timeout,
                    idle_timeout: rules.tunnel_idle_timeout,
                };
                let (response, closed) = Box::pin(tunnel::open(
                    request,
                    settings,
                    &connection.slot,
                    &self.tunnels,
                ))
                .await?;
                Ok(Reply {
                    response,
                    tunnel: Some(closed),
                    intercept: None,
                })
            }
            RequestMode::Peer => Box::pin(self.serve_member(request, exchange))
                .await
                .map(Reply::from),
            RequestMode::Gateway => {
                let origin = self.origin_for(connection);
                Box::pin(self.gateway(&rules, request, origin, exchange))
                    .await
                    .map(Reply::from)
            }
            RequestMode::Forward | RequestMode::Reverse => {
                let forward = self.forward_request(&rules, request, client)?;
                let origin = self.origin_for(connection);
                Ok(self.fetch(forward, origin, exchange).await?.into())
            }
        }
    }
}
