//! One client connection, by protocol: plain HTTP/1.1, TLS (HTTP/1.1 or HTTP/2 by ALPN), and
//! the TLS session inside an intercepted CONNECT. Each request is handed to the proxy and its
//! response wrapped for the access log; this module decides nothing about the requests.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::{Request, Response};
use tokio::sync::watch;

use crate::http1::{self, HeadError, Io, RequestBody, Stream};
use crate::http2;
use crate::logging::{AccessLog, AccessRecord, LoggedBody};
use crate::metrics::Metrics;
use crate::proxy::{ClientConnection, Proxy};
use crate::tls::{Accepted, HandshakeError, InterceptCa};

/// What every connection is served with: the proxy, where records go, the protocol settings.
pub(super) struct Served {
    pub proxy: Arc<Proxy>,
    pub metrics: Arc<Metrics>,
    pub log: Arc<AccessLog>,
    pub http1: http1::Settings,
    pub http2: http2::Settings,
    pub intercept: Option<Arc<InterceptCa>>,
    pub stop: watch::Receiver<bool>,
    /// Every connection task, so that shutdown waits for intercepted sessions too.
    pub connections: tokio_util::task::TaskTracker,
}

/// What one client connection's requests are handed to.
#[derive(Clone)]
pub(super) struct Connection {
    pub shared: Arc<Served>,
    pub client: Arc<ClientConnection>,
}

impl Connection {
    /// Serves a TLS connection with the protocol the client chose.
    pub(super) async fn serve_tls<S: Io>(self, accepted: Accepted<S>) {
        let stream = Stream::new(accepted.stream);
        let stop = self.shared.stop.clone();
        if accepted.h2 {
            http2::serve(stream, self.shared.http2, Arc::new(self), stop).await;
        } else {
            let settings = self.shared.http1;
            http1::serve(stream, settings, &self, stop).await;
        }
    }

    /// After an intercepted CONNECT's 200: TLS with the client under a certificate for the
    /// host it asked for, then its requests, each for `https://` that host.
    fn intercept(&self, intercept: crate::proxy::Intercept) {
        let Some(ca) = self.shared.intercept.clone() else {
            return;
        };
        let (inside, upgrade) = self.shared.proxy.intercepted(&self.client, intercept);
        let connection = Connection {
            shared: self.shared.clone(),
            client: Arc::new(inside),
        };
        let timeout = self.shared.http1.header_timeout;
        self.shared.connections.spawn(async move {
            let Ok(upgraded) = upgrade.wait().await else {
                return;
            };
            let host = connection
                .client
                .intercepted()
                .map(|a| a.host().to_owned())
                .unwrap_or_default();
            let client = connection.client.peer;
            match ca.accept(&host, Stream::new(upgraded), timeout).await {
                Ok(accepted) => {
                    let metrics = connection.shared.metrics.clone();
                    metrics.connection_opened();
                    connection.serve_tls(accepted).await;
                    metrics.connection_closed();
                }
                Err(HandshakeError::Rejected(alert)) => tracing::warn!(
                    %client, %host,
                    "intercept: the client rejected hoard's certificate ({alert:?}); it does not \
                     trust the interception CA (see `hoard ca init`), or pins this site \
                     (add --intercept-skip {host})"
                ),
                Err(e) => {
                    tracing::info!(%client, %host, error = %e, "intercept: TLS with the client failed")
                }
            }
        });
    }
}

/// Logs a TLS client's failed handshake: a rejected certificate is the operator's to fix.
pub(super) fn handshake_failed(client: std::net::SocketAddr, error: &HandshakeError) {
    match error {
        HandshakeError::Rejected(_) => tracing::warn!(%client, %error, "TLS handshake refused"),
        _ => tracing::debug!(%client, %error, "TLS handshake failed"),
    }
}

impl http1::Service for Connection {
    type Body = LoggedBody;

    fn call(
        &self,
        request: Request<RequestBody>,
    ) -> Pin<Box<dyn Future<Output = Response<LoggedBody>> + Send>> {
        let connection = self.clone();
        Box::pin(async move { connection.handle(request).await })
    }

    fn refuse(&self, error: HeadError) -> Response<LoggedBody> {
        let handled = self.shared.proxy.refuse(error, &self.client);
        let record = AccessRecord {
            exchange: handled.exchange,
            log: self.shared.log.clone(),
            metrics: self.shared.metrics.clone(),
        };
        handled.response.map(|body| LoggedBody::new(body, record))
    }
}

impl Connection {
    /// One request: the proxy answers it, and its record is written when the response body
    /// has gone (or, for a tunnel, when the tunnel closes).
    async fn handle(&self, request: Request<RequestBody>) -> Response<LoggedBody> {
        let handled = self.shared.proxy.handle(request, &self.client).await;
        let record = AccessRecord {
            exchange: handled.exchange,
            log: self.shared.log.clone(),
            metrics: self.shared.metrics.clone(),
        };
        if let Some(intercept) = handled.intercept {
            self.intercept(intercept);
        }
        match handled.tunnel {
            // A tunnel's line is written when it closes, with what it carried (as Squid does).
            Some(closed) => {
                tokio::spawn(async move {
                    let summary = closed.wait().await;
                    let complete = summary.is_some_and(|s| s.end != crate::proxy::TunnelEnd::Error);
                    record.tunnel_closed(summary.map(|s| (s.up, s.down)), complete);
                });
                handled.response.map(LoggedBody::unlogged)
            }
            None => handled.response.map(|body| LoggedBody::new(body, record)),
        }
    }
}
