//! The upstream client: pooled keep-alive HTTP/1.1 connections to origins, over TCP or rustls,
//! with connect, first-byte and read (body silence) timeouts, and typed errors that say which origin failed and why.
//!
//! It sends exactly the request it is given; deciding what to send (headers, target, caching)
//! belongs to `proxy/`. It must not build client-facing responses.

mod connector;
mod destinations;
mod error;
mod keep_alive;
mod parent;
mod spelling;

pub use destinations::{Denied, DenyReason, DestRule, DestinationPolicy, canonical, resolve};
pub use error::UpstreamError;
pub use parent::{ParentError, ParentProxy};

use std::sync::Arc;
use std::time::Duration;

use http::header::{IF_MODIFIED_SINCE, IF_NONE_MATCH};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{CaptureConnection, HttpConnector, capture_connection};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::RootCertStore;

use crate::body::{self, ProxyBody, TimeLimit};

/// How origins are reached, fixed at start.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamSettings {
    /// PEM bytes of extra trusted CAs, read once at start-up.
    pub extra_ca_pem: Option<Vec<u8>>,
    pub connect_timeout: Duration,
    pub first_byte_timeout: Duration,
    pub read_timeout: Duration,
    /// Destinations no client may reach.
    pub deny_dest: Vec<DestRule>,
    /// Exceptions to the safe defaults for clients outside `--local-clients`.
    pub allow_dest: Vec<DestRule>,
    /// `--parent`: the proxy misses and tunnels go through.
    pub parent: Option<ParentProxy>,
}

/// Sends requests to origins.
#[derive(Clone)]
pub struct UpstreamClient {
    client: Client<HttpsConnector<connector::GuardedConnector>, ProxyBody>,
    policy: Arc<DestinationPolicy>,
    parent: Option<Arc<ParentProxy>>,
    connect_timeout: Duration,
    first_byte_timeout: Duration,
    read_timeout: Duration,
}

impl UpstreamClient {
    /// A client whose every connection obeys `policy`. Each policy gets its own client, so a
    /// pooled connection opened for one kind of client is never reused by another.
    pub fn new(
        config: &UpstreamSettings,
        policy: Arc<DestinationPolicy>,
    ) -> Result<Self, UpstreamError> {
        let tls = tls_config(config.extra_ca_pem.as_deref())?;
        let parent = config.parent.clone().map(Arc::new);
        let mut http =
            HttpConnector::new_with_resolver(destinations::DenyingResolver::new(policy.clone()));
        // The URI scheme decides plain or TLS; the https connector below wraps this one.
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(config.connect_timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector::GuardedConnector::new(
                http,
                policy.clone(),
                parent.clone(),
                config.connect_timeout,
            ));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            // Enough idle connections per origin for a busy site, without keeping thousands of
            // descriptors open after a burst.
            .pool_max_idle_per_host(256)
            // Requests go out in Title-Case: some old origins only know `Content-Type`, and
            // the client's own spelling stays in hoard's parser, which hyper cannot read.
            .http1_title_case_headers(true)
            // The proxy sets Host itself (forward: from the absolute URI; reverse: kept).
            .set_host(false)
            .build(connector);
        Ok(UpstreamClient {
            client,
            policy,
            parent,
            connect_timeout: config.connect_timeout,
            first_byte_timeout: config.first_byte_timeout,
            read_timeout: config.read_timeout,
        })
    }

    /// The destination rules, for CONNECT tunnels, which dial on their own.
    pub fn policy(&self) -> &Arc<DestinationPolicy> {
        &self.policy
    }

    /// The parent proxy, for CONNECT tunnels, which go through it too.
    pub fn parent(&self) -> Option<&ParentProxy> {
        self.parent.as_deref()
    }

    /// Sends `request` (absolute URI) and waits for the response head, at most the
    /// connect timeout plus the first-byte timeout. The body that follows ends with an error if
    /// the origin falls silent for longer than the read timeout.
    pub async fn send(
        &self,
        request: Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, UpstreamError> {
        let host = request
            .uri()
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default();
        self.policy.check_uri(request.uri())?;
        let conditional = is_conditional(&request);
        let mut request = request;
        // A plain request through the parent carries its credentials (an https one is
        // inside a CONNECT that did).
        let via_parent = self.parent.as_deref().filter(|parent| {
            request.uri().scheme() == Some(&http::uri::Scheme::HTTP)
                && parent.applies_to(request.uri().host().unwrap_or_default())
        });
        if let Some(authorization) = via_parent.and_then(ParentProxy::authorization) {
            request
                .headers_mut()
                .insert(http::header::PROXY_AUTHORIZATION, authorization.clone());
        }
        // The origin's interim responses (103 Early Hints, 102) go on to the client as they come.
        if let Some(interim) = request.extensions_mut().remove::<crate::http1::Interim>() {
            hyper::ext::on_informational(&mut request, move |informational| {
                interim.send(informational.status(), informational.headers().clone());
            });
        }
        let (mut request, again) = replayable(request).await?;
        // A pooled connection the origin closed while it sat idle fails the request sent on
        // it before any answer comes; an idempotent request (RFC 9110 §9.2.2) is then sent
        // once more, on a fresh connection (hyper-util drops the dead one). A fresh
        // connection that fails is the origin's failure, reported as it is.
        let used = again.as_ref().map(|_| capture_connection(&mut request));
        let exchange = async {
            match (self.client.request(request).await, again) {
                (Err(e), Some(again))
                    if error::stale_connection(&e) && used.as_ref().is_some_and(was_reused) =>
                {
                    tracing::debug!(%host, error = %e, "retrying on a fresh connection");
                    self.client.request(again).await
                }
                (result, _) => result,
            }
        };
        match tokio::time::timeout(self.connect_timeout + self.first_byte_timeout, exchange).await {
            // A 304 says "the copy you have is current": to a request that named no copy it
            // is nonsense, and passing it on would leave the client (or the cache) without a body.
            Ok(Ok(response)) if response.status() == StatusCode::NOT_MODIFIED && !conditional => {
                Err(UpstreamError::Protocol {
                    host,
                    reason: "304 Not Modified to a request without If-None-Match or \
                             If-Modified-Since"
                        .into(),
                })
            }
            // The parent wants (other) credentials from hoard: the client could not give
            // them, and a 407 would make it think hoard itself asked.
            Ok(Ok(response))
                if response.status() == StatusCode::PROXY_AUTHENTICATION_REQUIRED
                    && let Some(parent) = via_parent =>
            {
                Err(UpstreamError::Parent(parent.refused_credentials()))
            }
            // hoard never asks for an upgrade (`Upgrade` is hop-by-hop and removed), so a
            // 101 would switch the client's connection to a protocol nobody agreed on.
            Ok(Ok(response)) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
                Err(UpstreamError::Protocol {
                    host,
                    reason: "101 Switching Protocols without an upgrade request".into(),
                })
            }
            Ok(Ok(response)) => {
                let keep_alive = response
                    .extensions()
                    .get::<Arc<keep_alive::OriginKeepAlive>>()
                    .cloned();
                // hyper decodes only `chunked`; a body still in another transfer coding would
                // be passed on (and stored) with no word of it once the field is removed.
                if let Err(framing) = body::check_transfer_encoding(response.headers()) {
                    return Err(UpstreamError::Protocol {
                        host,
                        reason: framing.to_string(),
                    });
                }
                let idle = TimeLimit::Idle(self.read_timeout);
                let response = response.map(|incoming| body::time_limited(incoming, idle));
                Ok(match keep_alive {
                    Some(keep_alive) => {
                        keep_alive.answered(response.headers());
                        let mut response = response;
                        if let Some(spelling) = keep_alive.take_spelling() {
                            response.extensions_mut().insert(spelling);
                        }
                        response.map(|body| keep_alive.watch(body))
                    }
                    None => response,
                })
            }
            Ok(Err(e)) => Err(UpstreamError::from_client_error(
                host,
                self.connect_timeout,
                &e,
            )),
            Err(_) => Err(UpstreamError::FirstByteTimeout {
                host,
                after: self.first_byte_timeout,
            }),
        }
    }
}

/// Whether the connection a request went out on had carried a response before.
fn was_reused(used: &CaptureConnection) -> bool {
    let metadata = used.connection_metadata();
    let Some(connected) = metadata.as_ref() else {
        return false;
    };
    let mut extras = http::Extensions::new();
    connected.get_extras(&mut extras);
    extras
        .get::<Arc<keep_alive::OriginKeepAlive>>()
        .is_some_and(|keep_alive| keep_alive.reused())
}

/// Bodies up to this size are kept so an idempotent request can be sent again.
const REPLAYABLE_BODY: u64 = 64 * 1024;

/// `request`, and a copy to send again if it is idempotent and its body is empty or small
/// and of known length (read whole first: a larger or streaming body is never held back).
async fn replayable(
    request: Request<ProxyBody>,
) -> Result<(Request<ProxyBody>, Option<Request<ProxyBody>>), UpstreamError> {
    let idempotent = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    );
    let small = hyper::body::Body::size_hint(request.body())
        .exact()
        .is_some_and(|len| len <= REPLAYABLE_BODY);
    if !idempotent || !small {
        return Ok((request, None));
    }
    let (parts, body) = request.into_parts();
    let bytes = body
        .collect()
        .await
        .map_err(|e| UpstreamError::RequestBody {
            too_large: e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some(),
            reason: e.to_string(),
        })?
        .to_bytes();
    let again = Request::from_parts(parts.clone(), body::full(bytes.clone()));
    Ok((Request::from_parts(parts, body::full(bytes)), Some(again)))
}

/// Whether `request` lets the origin answer 304 (RFC 9110 §15.4.5).
fn is_conditional(request: &Request<ProxyBody>) -> bool {
    let headers = request.headers();
    headers.contains_key(IF_NONE_MATCH) || headers.contains_key(IF_MODIFIED_SINCE)
}

fn tls_config(extra_ca_pem: Option<&[u8]>) -> Result<rustls::ClientConfig, UpstreamError> {
    let mut roots = RootCertStore::empty();
    // A machine without system roots still works for origins trusted through --ca-file.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(pem) = extra_ca_pem {
        let mut reader = pem;
        let mut added = 0;
        for cert in rustls_pemfile::certs(&mut reader) {
            let cert = cert.map_err(|e| UpstreamError::Tls(format!("--ca-file: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| UpstreamError::Tls(format!("--ca-file: {e}")))?;
            added += 1;
        }
        if added == 0 {
            return Err(UpstreamError::Tls(
                "--ca-file: no PEM certificate found".into(),
            ));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| UpstreamError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}
