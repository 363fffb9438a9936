//! Handing a client connection over after a successful CONNECT: the connection puts an
//! `OnUpgrade` in the request's extensions, and once it has written the 2xx head it sends the
//! socket, with any bytes the client sent early, to whoever holds it (the tunnel).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

use super::transport::Stream;

/// The client's socket after the response head: what the client sent past its request head
/// comes first, then the socket itself.
pub struct Upgraded {
    early: Bytes,
    stream: Stream,
}

impl std::fmt::Debug for Upgraded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upgraded")
            .field("early", &self.early.len())
            .finish_non_exhaustive()
    }
}

impl Upgraded {
    pub(crate) fn new(early: Bytes, stream: Stream) -> Upgraded {
        Upgraded { early, stream }
    }
}

impl AsyncRead for Upgraded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.early.is_empty() {
            let n = self.early.len().min(buf.remaining());
            buf.put_slice(&self.early[..n]);
            self.early.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// In a CONNECT request's extensions: resolves to the client's socket once the 2xx head has
/// gone, or to an error if the answer was not 2xx or the client left. (Shared because
/// extensions must be `Clone`; only one holder can take the socket.)
#[derive(Debug, Clone)]
pub struct OnUpgrade(Arc<Mutex<Option<oneshot::Receiver<Upgraded>>>>);

#[derive(Debug, thiserror::Error)]
#[error("the connection was not handed over (no 2xx answer, or the client left)")]
pub struct NotUpgraded;

impl OnUpgrade {
    pub(crate) fn new(receiver: oneshot::Receiver<Upgraded>) -> OnUpgrade {
        OnUpgrade(Arc::new(Mutex::new(Some(receiver))))
    }

    pub async fn wait(self) -> Result<Upgraded, NotUpgraded> {
        let receiver = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        receiver.ok_or(NotUpgraded)?.await.map_err(|_| NotUpgraded)
    }
}
