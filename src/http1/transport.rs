//! What a client connection runs over. A plain TCP socket is the fast case: an idle
//! connection waits for readiness without holding a read buffer, and cache files go out with
//! `sendfile`. Any other byte stream (TLS, or TLS inside a CONNECT tunnel) is a `Stream`:
//! read through a buffer and written with copies, as it has buffers and framing of its own.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// A byte stream a connection can be served over or a tunnel can carry.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// Any stream other than a plain socket, boxed so that one serving loop covers them all.
pub struct Stream(Pin<Box<dyn Io>>);

impl Stream {
    pub fn new(io: impl Io) -> Stream {
        Stream(Box::pin(io))
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.0.as_mut().poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.0.as_mut().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.0.as_mut().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.as_mut().poll_shutdown(cx)
    }
}

/// A connection's two directions, split so that the body can be read while the response is
/// written.
pub trait Transport: Send + 'static {
    type Reader: Reader;
    type Writer: Writer;

    fn split(self) -> (Self::Reader, Self::Writer);

    /// The halves as one stream again, for a CONNECT tunnel.
    fn reunite(reader: Self::Reader, writer: Self::Writer) -> Option<Stream>;
}

pub trait Reader: AsyncRead + Unpin + Send {
    /// Resolves when a read would not wait (or the stream failed). A plain socket waits for
    /// readiness, so an idle connection needs no buffer; other streams resolve at once.
    fn ready(&self) -> impl Future<Output = io::Result<()>> + Send;
}

pub trait Writer: AsyncWrite + Unpin + Send {
    /// The socket, when bytes written go straight onto one (so `sendfile` can write to it).
    fn socket(&mut self) -> Option<&mut OwnedWriteHalf>;
}

impl Transport for TcpStream {
    type Reader = OwnedReadHalf;
    type Writer = OwnedWriteHalf;

    fn split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        self.into_split()
    }

    fn reunite(reader: OwnedReadHalf, writer: OwnedWriteHalf) -> Option<Stream> {
        reader.reunite(writer).ok().map(Stream::new)
    }
}

impl Reader for OwnedReadHalf {
    async fn ready(&self) -> io::Result<()> {
        self.readable().await
    }
}

impl Writer for OwnedWriteHalf {
    fn socket(&mut self) -> Option<&mut OwnedWriteHalf> {
        Some(self)
    }
}

impl Transport for Stream {
    type Reader = ReadHalf<Stream>;
    type Writer = WriteHalf<Stream>;

    fn split(self) -> (ReadHalf<Stream>, WriteHalf<Stream>) {
        tokio::io::split(self)
    }

    fn reunite(reader: ReadHalf<Stream>, writer: WriteHalf<Stream>) -> Option<Stream> {
        reader.is_pair_of(&writer).then(|| reader.unsplit(writer))
    }
}

impl Reader for ReadHalf<Stream> {
    fn ready(&self) -> impl Future<Output = io::Result<()>> + Send {
        std::future::ready(Ok(()))
    }
}

impl Writer for WriteHalf<Stream> {
    fn socket(&mut self) -> Option<&mut OwnedWriteHalf> {
        None
    }
}
