//! The TCP connector under the upstream client: hyper-util's `HttpConnector` (which resolves
//! names through `DenyingResolver`), with the destination policy applied to what it cannot
//! see. An IP literal never reaches the resolver, so it is checked here before dialling, and
//! every connection is checked once more on the address it actually reached. With a parent
//! proxy (`parent.rs`), origins it applies to are reached through it instead.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::destinations::{DenyingResolver, DestinationPolicy};
use super::keep_alive::ExpiringStream;
use super::parent::ParentProxy;

#[derive(Clone)]
pub(super) struct GuardedConnector {
    inner: HttpConnector<DenyingResolver>,
    policy: Arc<DestinationPolicy>,
    parent: Option<Arc<ParentProxy>>,
    connect_timeout: Duration,
}

impl GuardedConnector {
    pub(super) fn new(
        inner: HttpConnector<DenyingResolver>,
        policy: Arc<DestinationPolicy>,
        parent: Option<Arc<ParentProxy>>,
        connect_timeout: Duration,
    ) -> Self {
        GuardedConnector {
            inner,
            policy,
            parent,
            connect_timeout,
        }
    }
}

impl tower_service::Service<Uri> for GuardedConnector {
    type Response = ExpiringStream;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let policy = Arc::clone(&self.policy);
        let host = uri.host().unwrap_or_default().to_owned();
        let plain = uri.scheme() != Some(&http::uri::Scheme::HTTPS);
        let before_dialling = policy.check_uri(&uri);
        if let Some(parent) = self
            .parent
            .clone()
            .filter(|parent| parent.applies_to(&host))
        {
            // The parent resolves the name: only what the request names can be checked.
            let (port, timeout) = (uri.port_u16(), self.connect_timeout);
            return Box::pin(async move {
                before_dialling.map_err(|denied| -> Self::Error { Box::new(denied) })?;
                let stream = if plain {
                    parent.connect(timeout).await?
                } else {
                    parent.tunnel(&host, port.unwrap_or(443), timeout).await?
                };
                Ok(ExpiringStream::with_parent(stream, plain, plain))
            });
        }
        // Lazy: nothing is dialled until the future is polled, after the check.
        let connecting = self.inner.call(uri);
        Box::pin(async move {
            before_dialling.map_err(|denied| -> Self::Error { Box::new(denied) })?;
            let stream: TokioIo<TcpStream> = connecting.await?;
            let peer = stream.inner().peer_addr()?;
            policy
                .check_connected(&host, peer)
                .map_err(|denied| -> Self::Error { Box::new(denied) })?;
            Ok(ExpiringStream::new(stream.into_inner(), plain))
        })
    }
}
