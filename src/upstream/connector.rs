//! The TCP connector under the upstream client: hyper-util's `HttpConnector` (which resolves
//! names through `DenyingResolver`), with the destination policy applied to what it cannot
//! see. An IP literal never reaches the resolver, so it is checked here before dialling, and
//! every connection is checked once more on the address it actually reached.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::destinations::{DenyingResolver, DestinationPolicy};
use super::keep_alive::ExpiringStream;

#[derive(Clone)]
pub(super) struct GuardedConnector {
    inner: HttpConnector<DenyingResolver>,
    policy: Arc<DestinationPolicy>,
}

impl GuardedConnector {
    pub(super) fn new(
        inner: HttpConnector<DenyingResolver>,
        policy: Arc<DestinationPolicy>,
    ) -> Self {
        GuardedConnector { inner, policy }
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
