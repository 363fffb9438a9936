//! Keep-alive HTTP/1.1 connections to one member, and sending a request over them.
//!
//! Written here rather than taken from hyper-util's pooled client: a request for a peer is
//! sent in absolute form, as to a proxy, and that client pools proxied connections by the
//! *target's* host, so one member would get a pool per origin site. Here each member has
//! one pool of idle connections, each request takes one that is ready (or dials), and it
//! goes back once the response head has arrived; hyper tells when it is ready again.

use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpSocket;

use super::PeerError;
use crate::body::{self, ProxyBody};

/// Connections kept per member (idle, or still carrying a response body); more are closed
/// once used.
const MAX_KEPT: usize = 256;

pub(super) struct Pool {
    addr: SocketAddr,
    /// Where connections leave from (this node's listen address), if specific.
    source: Option<IpAddr>,
    timeout: Duration,
    idle: Mutex<Vec<SendRequest<ProxyBody>>>,
}

impl Pool {
    pub(super) fn new(addr: SocketAddr, source: Option<IpAddr>, timeout: Duration) -> Pool {
        Pool {
            addr,
            source,
            timeout,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Sends a body-less request and returns the response head (its body streams after).
    /// A request that fails on a reused connection before any answer is sent once more on a
    /// new one (the member may have closed an idle connection meanwhile). The whole of it,
    /// connecting included, must finish within the peer timeout.
    pub(super) async fn send(
        &self,
        head: &http::request::Parts,
        fields: &[(HeaderName, HeaderValue)],
    ) -> Result<Response<Incoming>, PeerError> {
        let request = || {
            let mut request = request_from(head);
            for (name, value) in fields {
                request.headers_mut().append(name, value.clone());
            }
            request
        };
        let attempt = async {
            if let Some(mut sender) = self.take_idle() {
                match sender.send_request(request()).await {
                    Ok(response) => {
                        self.give_back(sender);
                        return Ok(response);
                    }
                    Err(e) if !e.is_canceled() && !e.is_closed() && !e.is_incomplete_message() => {
                        return Err(PeerError::Failed(e.to_string()));
                    }
                    Err(_) => {}
                }
            }
            let mut sender = self.connect().await?;
            let response = sender
                .send_request(request())
                .await
                .map_err(|e| PeerError::Failed(e.to_string()))?;
            self.give_back(sender);
            Ok(response)
        };
        tokio::time::timeout(self.timeout, attempt)
            .await
            .map_err(|_| PeerError::Timeout(self.timeout))?
    }

    /// Sends a request to one of the member's `/_hoard/fleet/` endpoints and reads the
    /// (small) answer whole, so that the connection can be used again.
    pub(super) async fn call(&self, head: &http::request::Parts) -> Result<StatusCode, PeerError> {
        let response = self.send(head, &[]).await?;
        let status = response.status();
        tokio::time::timeout(self.timeout, response.into_body().collect())
            .await
            .map_err(|_| PeerError::Timeout(self.timeout))?
            .map_err(|e| PeerError::Failed(e.to_string()))?;
        Ok(status)
    }

    fn take_idle(&self) -> Option<SendRequest<ProxyBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|sender| !sender.is_closed());
        let ready = idle.iter().rposition(SendRequest::is_ready)?;
        Some(idle.swap_remove(ready))
    }

    fn give_back(&self, sender: SendRequest<ProxyBody>) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() >= MAX_KEPT {
            idle.retain(|sender| !sender.is_closed());
        }
        if idle.len() < MAX_KEPT {
            idle.push(sender);
        }
    }

    async fn connect(&self) -> Result<SendRequest<ProxyBody>, PeerError> {
        let socket = match self.addr {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(|e| PeerError::Connect(e.to_string()))?;
        if let Some(source) = self.source.filter(|ip| ip.is_ipv4() == self.addr.is_ipv4()) {
            socket
                .bind(SocketAddr::new(source, 0))
                .map_err(|e| PeerError::Connect(format!("binding to {source}: {e}")))?;
        }
        let stream = socket
            .connect(self.addr)
            .await
            .map_err(|e| PeerError::Connect(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| PeerError::Connect(e.to_string()))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }
}

/// GET and HEAD carry no body, so the head is all a retry needs.
fn request_from(head: &http::request::Parts) -> Request<ProxyBody> {
    let mut request = Request::new(body::empty());
    *request.method_mut() = head.method.clone();
    *request.uri_mut() = head.uri.clone();
    *request.headers_mut() = head.headers.clone();
    request
}
