//! Listening: bind the plain and TLS ports, accept, serve each client connection
//! (`connection.rs`: hoard's own HTTP/1.1, or HTTP/2 by ALPN on TLS), reload on SIGHUP, and
//! shut down gracefully. Every request is handed to `proxy::Proxy`; this module does not look
//! at requests beyond wrapping their responses for the access log.

mod connection;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::cache::shared::Shared;
use crate::cache::{Cache, CacheError, LoadReport};
use crate::config::Config;
use crate::fleet::Fleet;
use crate::http1;
use crate::logging::{self, AccessLog};
use crate::metrics::Metrics;
use crate::proxy::{Listener, Proxy, Rules};
use crate::shared_tier::ObjectStoreTier;
use crate::tls::{InterceptCa, TlsError, TlsListener};
use crate::upstream::UpstreamError;
use connection::{Connection, Served};

/// The listening socket, as `TcpListener::bind` makes it (address reuse, a backlog of 1024),
/// with TCP_NODELAY set once for every connection it accepts: each response is written
/// whole, so Nagle's algorithm would only delay the next one.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Writes buffered access-log lines out regularly, so a quiet proxy's log is current.
async fn flush_every(log: Arc<AccessLog>) {
    let mut tick = tokio::time::interval(logging::FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        log.flush();
    }
}

/// Reopens the access-log file whenever SIGUSR1 arrives (logrotate's postrotate).
async fn reopen_on_sigusr1(log: Arc<AccessLog>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut signals) = signal(SignalKind::user_defined1()) else {
        tracing::warn!("cannot watch SIGUSR1; the access log will not be reopened");
        return;
    };
    while signals.recv().await.is_some() {
        match log.reopen() {
            Ok(()) => tracing::info!("access log reopened"),
            Err(e) => tracing::warn!(error = %e, "cannot reopen the access log"),
        }
    }
}

/// Re-reads the command line and config file on each SIGHUP and applies what can change while
/// running (access rules, authentication, limits, the access log); settings that need a
/// restart are named in a warning. A file that does not load changes nothing.
async fn reload_on_sighup(
    argv: Vec<std::ffi::OsString>,
    started: Config,
    proxy: Arc<Proxy>,
    log: Arc<AccessLog>,
    tls: Option<Arc<TlsListener>>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot watch SIGHUP; the configuration will not be reloaded");
        return;
    };
    while hangups.recv().await.is_some() {
        let config = match crate::config::load(argv.clone()) {
            Ok((config, _)) => config,
            Err(e) => {
                tracing::warn!(error = %e, "reload failed, keeping the running configuration");
                continue;
            }
        };
        let rules = match Rules::load(&config.proxy.access) {
            Ok(rules) => rules,
            Err(e) => {
                tracing::warn!(error = %e, "reload failed, keeping the running configuration");
                continue;
            }
        };
        if let Err(e) = log.reconfigure(config.access_log.clone(), config.log_format.clone()) {
            tracing::warn!(error = %e, "reload: cannot open the new access log, keeping the old one");
        }
        proxy.reload(rules);
        proxy.describe_settings(config.to_file_text());
        proxy.cache().reload_rules(config.cache.rules.clone());
        let mut pending = started.restart_needed(&config);
        match (&tls, config.tls.certs.is_empty()) {
            (Some(tls), false) => match tls.reload(&config.tls.certs) {
                Ok(()) => tracing::info!("TLS certificates reloaded"),
                Err(e) => tracing::warn!(error = %e, "reload: keeping the running certificates"),
            },
            (None, true) => {}
            // Turning TLS on or off changes what the port speaks.
            _ => pending.push("tls-cert".to_owned()),
        }
        match proxy.fleet() {
            Some(fleet) => {
                if let Err(e) = fleet.reload(config.fleet.peers.clone()).await {
                    tracing::warn!(error = %e, "reload: keeping the running member list");
                }
            }
            // Joining a fleet builds the routing at start.
            None if !config.fleet.peers.is_empty() => pending.push("peers".to_owned()),
            None => {}
        }
        if pending.is_empty() {
            tracing::info!("configuration reloaded");
        } else {
            tracing::warn!(
                "configuration reloaded; these changes take effect after a restart: {}",
                pending.join(", ")
            );
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Auth(#[from] crate::proxy::auth::AuthFileError),
    #[error(transparent)]
    Fleet(#[from] crate::fleet::FleetError),
    #[error(transparent)]
    SharedTier(#[from] crate::shared_tier::SharedTierError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot open the access log {path}: {source}")]
    AccessLog {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// A bound, not yet running proxy server.
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    /// `--tls-port`: a second listener, for TLS.
    tls_listener: Option<TcpListener>,
    /// The certificates, for whichever listener speaks TLS.
    tls: Option<Arc<TlsListener>>,
    intercept: Option<Arc<InterceptCa>>,
    /// `--admin-listen`: the admin interface's own listener.
    admin_listener: Option<TcpListener>,
    proxy: Arc<Proxy>,
    metrics: Arc<Metrics>,
    access_log: Arc<AccessLog>,
    /// The configuration at start, and the command line to read again on SIGHUP.
    config: Config,
    reload_argv: Option<Vec<std::ffi::OsString>>,
    /// One permit per client connection (`--max-connections`).
    connection_slots: Arc<tokio::sync::Semaphore>,
    http: http1::Settings,
    http2: crate::http2::Settings,
    cache_report: LoadReport,
}

impl Server {
    pub async fn bind(config: &Config) -> Result<Self, ServerError> {
        let bind_error = |source| ServerError::Bind {
            addr: config.listen,
            source,
        };
        raise_fd_limit(config.max_connections);
        let listener = listen(config.listen).map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        let mut listening = vec![local_addr];
        let tls = match config.tls.certs.is_empty() {
            true => None,
            false => Some(Arc::new(TlsListener::load(&config.tls.certs)?)),
        };
        let tls_listener = match config.tls.port {
            Some(port) => {
                let addr = SocketAddr::new(config.listen.ip(), port);
                let tls_error = |source| ServerError::Bind { addr, source };
                let bound = listen(addr).map_err(tls_error)?;
                listening.push(bound.local_addr().map_err(tls_error)?);
                Some(bound)
            }
            None => None,
        };
        let intercept = match &config.tls.intercept_ca {
            Some(dir) => Some(Arc::new(InterceptCa::open(dir)?)),
            None => None,
        };
        let admin_listener = match config.proxy.admin_listen {
            Some(addr) => {
                let admin_error = |source| ServerError::Bind { addr, source };
                let admin = listen(addr).map_err(admin_error)?;
                listening.push(admin.local_addr().map_err(admin_error)?);
                Some(admin)
            }
            None => None,
        };
        let settings = config.cache.clone();
        let opened = tokio::task::spawn_blocking(move || Cache::open(settings))
            .await
            .map_err(|e| ServerError::Bind {
                addr: config.listen,
                source: std::io::Error::other(e),
            })?;
        let (mut cache, cache_report) = opened?;
        let metrics = Arc::new(Metrics::default());
        if let Some(settings) = &config.shared_tier {
            let tier = ObjectStoreTier::open(settings, metrics.clone())?;
            cache.set_shared_tier(Shared::new(Arc::new(tier), settings.min_ttl));
        }
        let access_log = AccessLog::open(config.access_log.clone(), config.log_format.clone())
            .map_err(|source| ServerError::AccessLog {
                path: config.access_log.clone().unwrap_or_default(),
                source,
            })?;
        let access_log = Arc::new(access_log);
        let rules = Rules::load(&config.proxy.access)?;
        let fleet = Fleet::start(config.fleet.clone(), local_addr, metrics.clone()).await?;
        if let Some(fleet) = &fleet {
            crate::cache::outcome::set_cache_name(fleet.cache_name());
        }
        let proxy = Arc::new(Proxy::new(
            &config.proxy,
            Arc::new(cache),
            metrics.clone(),
            rules,
            listening,
            fleet,
        )?);
        proxy.describe_settings(config.to_file_text());
        let reaches_restricted = config.proxy.access.allow.iter().any(|allowed| {
            !config
                .proxy
                .local_clients
                .iter()
                .any(|local| local.contains(allowed))
        });
        if matches!(config.proxy.mode, crate::proxy::Mode::Forward) && reaches_restricted {
            tracing::warn!("{}", proxy.restrictions());
        }
        let http = http1::Settings {
            header_timeout: config.client_header_timeout,
            max_head: config.max_header_size,
        };
        let http2 = crate::http2::Settings {
            max_streams: config.tls.http2_max_streams,
            max_header_list: config.max_header_size as u32,
            idle: config.client_header_timeout,
        };
        Ok(Server {
            listener,
            local_addr,
            tls_listener,
            tls,
            intercept,
            admin_listener,
            proxy,
            metrics,
            access_log,
            config: config.clone(),
            reload_argv: None,
            connection_slots: Arc::new(tokio::sync::Semaphore::new(config.max_connections)),
            http,
            http2,
            cache_report,
        })
    }

    /// Reloads on SIGHUP by parsing `argv` (and its `--config` file) again.
    pub fn reload_on_sighup(mut self, argv: Vec<std::ffi::OsString>) -> Self {
        self.reload_argv = Some(argv);
        self
    }

    /// What the cache found on disk at start-up.
    pub fn cache_report(&self) -> LoadReport {
        self.cache_report
    }

    /// The address actually bound (the port is chosen by the OS when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The `--tls-port` listener's address, when there is one.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown` resolves, then stops accepting and lets in-flight requests
    /// finish for up to a grace period.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let connections = TaskTracker::new();
        let reopen = tokio::spawn(reopen_on_sigusr1(self.access_log.clone()));
        let flush = tokio::spawn(flush_every(self.access_log.clone()));
        let reload = self.reload_argv.clone().map(|argv| {
            tokio::spawn(reload_on_sighup(
                argv,
                self.config.clone(),
                self.proxy.clone(),
                self.access_log.clone(),
                self.tls.clone(),
            ))
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let shared = Arc::new(Served {
            proxy: self.proxy.clone(),
            metrics: self.metrics.clone(),
            log: self.access_log.clone(),
            http1: self.http,
            http2: self.http2,
            intercept: self.intercept.clone(),
            stop: stop_rx,
            connections: connections.clone(),
        });
        // Whether the main port speaks TLS (no `--tls-port` beside it).
        let main_tls = self.tls.clone().filter(|_| self.tls_listener.is_none());
        tokio::pin!(shutdown);
        loop {
            // At the connection limit, stop accepting: new clients wait in the listen queue.
            let slot = tokio::select! {
                slot = self.connection_slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => break,
                },
                () = &mut shutdown => break,
            };
            // Whichever listener has a client first.
            let accepted = async {
                let admin = async {
                    match &self.admin_listener {
                        Some(admin) => (admin.accept().await, Listener::Admin, None),
                        None => std::future::pending().await,
                    }
                };
                let tls_port = async {
                    match &self.tls_listener {
                        Some(tls) => (tls.accept().await, Listener::Proxy, self.tls.clone()),
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    accepted = self.listener.accept() => (accepted, Listener::Proxy, main_tls.clone()),
                    accepted = tls_port => accepted,
                    accepted = admin => accepted,
                }
            };
            tokio::select! {
                (accepted, listener, tls) = accepted => match accepted {
                    Ok((stream, peer)) => {
                        connections.spawn(self.serve(&shared, stream, peer, listener, tls, slot));
                    }
                    Err(e) => {
                        // EMFILE and friends are transient: back off instead of spinning or dying.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                () = &mut shutdown => break,
            }
        }
        drop(self.listener);
        drop(self.tls_listener);
        drop(self.admin_listener);
        // Tunnels carry no request to finish: they end now, and log as they do.
        self.proxy.close_tunnels().await;
        tracing::info!(
            connections = connections.len(),
            "shutting down: waiting for open connections"
        );
        let _ = stop_tx.send(true);
        connections.close();
        // One grace for everything: requests in flight, then the fills they started.
        let deadline = tokio::time::Instant::now() + self.config.shutdown_grace;
        if tokio::time::timeout_at(deadline, connections.wait())
            .await
            .is_err()
        {
            tracing::warn!("shutdown grace period over, closing remaining connections");
        }
        reopen.abort();
        flush.abort();
        if let Some(reload) = reload {
            reload.abort();
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.proxy.cache().shutdown(left).await;
        tracing::info!("cache index saved");
        self.access_log.flush();
    }

    /// Serves one client connection; on shutdown, finishes the request in flight and closes.
    fn serve(
        &self,
        shared: &Arc<Served>,
        stream: TcpStream,
        peer: SocketAddr,
        listener: Listener,
        tls: Option<Arc<TlsListener>>,
        slot: tokio::sync::OwnedSemaphorePermit,
    ) -> impl Future<Output = ()> + use<> {
        // Linux copies TCP_NODELAY from the listening socket (see `listen`): a system call
        // less per connection.
        #[cfg(not(target_os = "linux"))]
        let _ = stream.set_nodelay(true);
        let client = self.proxy.connection(peer, listener, slot, tls.is_some());
        let connection = Connection {
            shared: shared.clone(),
            client: Arc::new(client),
        };
        let metrics = self.metrics.clone();
        async move {
            metrics.connection_opened();
            let settings = connection.shared.http1;
            match tls {
                None => {
                    let stop = connection.shared.stop.clone();
                    http1::serve(stream, settings, &connection, stop).await;
                }
                Some(tls) => match tls.accept(stream, settings.header_timeout).await {
                    Ok(accepted) => connection.serve_tls(accepted).await,
                    Err(e) => connection::handshake_failed(peer, &e),
                },
            }
            metrics.connection_closed();
        }
    }
}

/// Raises the soft open-file limit to the hard one, as nginx's `worker_rlimit_nofile` and
/// Squid's `max_filedescriptors` do: each client connection needs a descriptor, and one more
/// for its origin connection or tunnel. Warns when `--max-connections` cannot fit.
fn raise_fd_limit(max_connections: usize) {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
            match rlimit::Resource::NOFILE.get() {
                Ok((soft, _)) => soft,
                Err(_) => return,
            }
        }
    };
    // A few dozen for the index, the log, listeners and the runtime.
    let needed = (max_connections as u64)
        .saturating_mul(2)
        .saturating_add(64);
    if needed > limit {
        tracing::warn!(
            "--max-connections {max_connections} needs about {needed} open files but the limit \
             is {limit}: clients beyond about {} at once will fail (raise `ulimit -n` or \
             LimitNOFILE=)",
            limit.saturating_sub(64) / 2
        );
    }
}
