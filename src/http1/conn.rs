//! One client connection, start to end: wait for a request head (holding no buffer while
//! idle), parse it (`head.rs`), hand the request to the service while feeding its body from
//! the socket (`decode.rs`, `body.rs`), relay interim responses, write the final response
//! (`encode.rs`, gathered into few `writev`s, or by `sendfile` from a cache file), then either
//! read the next request, hand the socket to a CONNECT tunnel, or close.
//!
//! Requests on one connection are answered strictly in order (pipelining is read one request
//! at a time). This module decides nothing about proxying: the service does.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Request, Response};
use http_body::Body;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::body::{BodyError, Fed, RequestBody};
use super::decode::{Decoded, Decoder};
use super::encode::Answering;
use super::head::{self, HeadError, RequestHead};
use super::transport::{Reader, Transport};
use super::upgrade::{OnUpgrade, Upgraded};
use super::write::{respond, write_continue, write_interim};
use super::{FileBody, Interim};

/// A connection's limits.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// The time a client has to send a complete request head, counted from the end of the
    /// previous response (so it is also how long an idle connection is kept).
    pub header_timeout: Duration,
    /// The largest request head.
    pub max_head: usize,
}

/// What answers a connection's requests.
pub trait Service {
    type Body: Body<Data = Bytes> + FileBody + Send + Unpin + 'static;

    /// Answers one request. Boxed: an idle connection then holds a pointer, not the room a
    /// request's future needs.
    fn call(
        &self,
        request: Request<RequestBody>,
    ) -> Pin<Box<dyn Future<Output = Response<Self::Body>> + Send>>;

    /// The answer to a head that could not be parsed; the connection closes after it.
    fn refuse(&self, error: HeadError) -> Response<Self::Body>;
}

/// The read buffer's first size, and how much room a read is given.
const READ_SIZE: usize = 8 * 1024;
thread_local! {
    /// Read buffers between requests, so a busy connection does not allocate one per request
    /// while an idle one holds none.
    static BUFFERS: std::cell::RefCell<Vec<BytesMut>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Buffers kept per thread.
const POOLED: usize = 256;

/// Room for a read: `size` more bytes when fewer than a quarter buffer is left.
fn make_room(buf: &mut BytesMut, size: usize) {
    if buf.capacity() - buf.len() < READ_SIZE / 4 {
        buf.reserve(size);
    }
}

fn take_buffer() -> BytesMut {
    BUFFERS
        .with_borrow_mut(Vec::pop)
        .unwrap_or_else(|| BytesMut::with_capacity(READ_SIZE))
}

/// Pools `buf` if nothing else still shares its memory (a request's header values do until
/// the request is dropped) and it has not grown past a normal size.
fn give_back(mut buf: BytesMut) {
    buf.clear();
    if buf.capacity() <= 4 * READ_SIZE && buf.try_reclaim(READ_SIZE) {
        BUFFERS.with_borrow_mut(|pool| {
            if pool.len() < POOLED {
                pool.push(buf);
            }
        });
    }
}

/// Bytes of a body nobody read that are skipped to keep the connection; more, and it closes.
const DRAIN_LIMIT: u64 = 64 * 1024;

/// How an exchange left the connection.
enum Next {
    KeepAlive,
    Close,
    /// Closed after an error answer: let the client read it before the socket goes.
    Linger,
}

/// Serves `stream` until the client closes, a head times out or is refused, a response asks
/// to close, the socket becomes a tunnel, or `stop` turns true (then after the request in
/// flight, if any).
pub async fn serve<S: Service, T: Transport>(
    stream: T,
    settings: Settings,
    service: &S,
    mut stop: watch::Receiver<bool>,
) {
    let (mut reader, mut writer) = stream.split();
    let mut buf = BytesMut::new();
    let mut interims = Interims {
        queue: Arc::default(),
        exchanges: 0,
    };
    loop {
        let head = match read_head(&mut reader, &mut buf, settings, &mut stop).await {
            Ok(Some(head)) => head,
            Ok(None) => {
                // Idle, timed out or shutting down: TLS says goodbye with close_notify.
                let _ = writer.shutdown().await;
                return;
            }
            Err(ReadError::Io) => return,
            Err(ReadError::Refused(error)) => {
                let response = service.refuse(error);
                let answering = Answering {
                    head: false,
                    connect: false,
                    http10: false,
                };
                let _ = Box::pin(respond(&mut writer, response, answering, false)).await;
                linger(reader, writer).await;
                return;
            }
        };
        let exchange = Exchange::<T> {
            reader: &mut reader,
            writer: &mut writer,
            buf: &mut buf,
            stop: &stop,
            interims: &mut interims,
        };
        // Boxed: the exchange's future is large, and an idle connection should not keep
        // room for one (measured: 4.9 KB per connection unboxed).
        match Box::pin(exchange.run(head, service)).await {
            Ok(Next::KeepAlive) => {}
            Ok(Next::Close) => {
                // TLS ends with close_notify, so the client can tell the end from a cut.
                let _ = writer.shutdown().await;
                return;
            }
            Ok(Next::Linger) => return linger(reader, writer).await,
            Err(upgrade) => {
                let early = buf.split().freeze();
                if let Some(stream) = T::reunite(reader, writer) {
                    let _ = upgrade.send(Upgraded::new(early, stream));
                }
                return;
            }
        }
        if buf.is_empty() {
            // Idle: give the buffer back rather than keep it for a request that may never come.
            give_back(std::mem::take(&mut buf));
        }
    }
}

enum ReadError {
    Refused(HeadError),
    Io,
}

/// Reads until a whole head has arrived. `Ok(None)`: the client closed, the head timed out,
/// or the connection was idle when shutdown began.
async fn read_head(
    reader: &mut impl Reader,
    buf: &mut BytesMut,
    settings: Settings,
    stop: &mut watch::Receiver<bool>,
) -> Result<Option<RequestHead>, ReadError> {
    let deadline = Instant::now() + settings.header_timeout;
    loop {
        if !buf.is_empty()
            && let Some(head) = head::parse(buf, settings.max_head).map_err(ReadError::Refused)?
        {
            return Ok(Some(head));
        }
        if buf.is_empty() {
            if *stop.borrow() {
                return Ok(None);
            }
            // Idle: wait for bytes before taking a buffer for them.
            tokio::select! {
                ready = reader.ready() => ready.map_err(|_| ReadError::Io)?,
                () = tokio::time::sleep_until(deadline) => return Ok(None),
                _ = stop.changed() => return Ok(None),
            }
        }
        if buf.capacity() == 0 {
            *buf = take_buffer();
        } else {
            make_room(buf, READ_SIZE);
        }
        // A stream that reads through its own buffers came here without waiting: shutdown
        // must still end it while idle.
        let idle = buf.is_empty();
        let read = tokio::select! {
            read = tokio::time::timeout_at(deadline, reader.read_buf(buf)) => read,
            _ = stop.changed(), if idle => return Ok(None),
        };
        match read {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return Ok(None),
            Ok(Ok(_)) => {}
        }
    }
}

/// One request and its response on a connection.
struct Exchange<'a, T: Transport> {
    reader: &'a mut T::Reader,
    writer: &'a mut T::Writer,
    buf: &'a mut BytesMut,
    stop: &'a watch::Receiver<bool>,
    interims: &'a mut Interims,
}

/// The connection's channel for interim responses, and its exchange count.
struct Interims {
    queue: Arc<super::InterimQueue>,
    exchanges: u64,
}

impl Interims {
    fn next_exchange(&mut self) -> u64 {
        self.exchanges += 1;
        self.exchanges
    }
}

/// How feeding a request body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyEnd {
    Complete,
    /// The reader dropped the body; the rest may still be on the socket.
    Abandoned,
    /// The client's bytes were malformed or stopped: the connection cannot go on.
    Broken,
}

impl<T: Transport> Exchange<'_, T> {
    /// `Err` carries the upgrade's sender when the answer was a CONNECT's 2xx.
    async fn run<S: Service>(
        self,
        head: RequestHead,
        service: &S,
    ) -> Result<Next, oneshot::Sender<Upgraded>> {
        let RequestHead {
            mut request,
            framing,
            close,
            expect_continue,
        } = head;
        let answering = Answering::of(&request);
        let interims = self.interims;
        let exchange = interims.next_exchange();
        request.extensions_mut().insert(Interim {
            queue: Arc::clone(&interims.queue),
            exchange,
        });
        let upgrade = answering.connect.then(|| {
            let (sender, receiver) = oneshot::channel();
            request.extensions_mut().insert(OnUpgrade::new(receiver));
            sender
        });
        let mut decoder = match framing {
            _ if answering.connect => Decoder::Done,
            head::Framing::None => Decoder::Done,
            head::Framing::Length(n) => Decoder::length(n),
            head::Framing::Chunked => Decoder::chunked(),
        };
        let (feed, body, mut wanted) = if decoder == Decoder::Done {
            (None, RequestBody::empty(), None)
        } else {
            let (wanted, wanted_rx) = match expect_continue {
                true => {
                    let (sender, receiver) = oneshot::channel();
                    (Some(sender), Some(receiver))
                }
                false => (None, None),
            };
            let (feed, body) = RequestBody::channel(decoder.remaining(), wanted);
            (Some(feed), body, wanted_rx)
        };
        let fed = std::sync::OnceLock::new();
        let mut continued = false;
        let mut responding = service.call(request.map(|()| body));
        let writer = self.writer;
        let written = {
            // The read side while the request is answered: the body, then watching for the
            // client to leave (hyper's default too), so that a response nobody will read is
            // dropped, and with it any cache fill that only it was feeding.
            let reading = async {
                let end = feed_body(self.reader, self.buf, &mut decoder, feed).await;
                let _ = fed.set(end);
                if end == BodyEnd::Complete {
                    until_closed(self.reader, self.buf).await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            let mut reading = pin!(reading);
            let response = loop {
                tokio::select! {
                    biased;
                    response = &mut responding => break response,
                    () = &mut reading => return Ok(Next::Close),
                    () = interims.queue.arrived.notified(), if !answering.http10 => {
                        for (of, status, headers) in interims.queue.take() {
                            if of == exchange && write_interim(writer, status, &headers).await.is_err() {
                                return Ok(Next::Close);
                            }
                        }
                    }
                    wants = async { wanted.as_mut().expect("checked").await }, if wanted.is_some() => {
                        wanted = None;
                        if wants.is_ok() {
                            if write_continue(writer).await.is_err() {
                                return Ok(Next::Close);
                            }
                            continued = true;
                        }
                    }
                }
            };
            // Interim responses that came with the final one (one read from the origin).
            for (of, status, headers) in interims.queue.take() {
                if of == exchange
                    && !answering.http10
                    && write_interim(writer, status, &headers).await.is_err()
                {
                    return Ok(Next::Close);
                }
            }
            let keep_alive = !close && !*self.stop.borrow();
            let status = response.status();
            let mut writing = pin!(respond(writer, response, answering, keep_alive));
            // The body may still be arriving while the response goes out (full duplex).
            let written = tokio::select! {
                biased;
                written = &mut writing => written,
                () = &mut reading => return Ok(Next::Close),
            };
            match written {
                // A tunnel whatever the request said of keep-alive (HTTP/1.0 clients say none).
                Ok(_) if answering.connect && status.is_success() => {
                    return Err(upgrade.expect("made for CONNECT"));
                }
                // A refused CONNECT's client may already be sending its tunnel's bytes.
                Ok(_) if answering.connect => return Ok(Next::Linger),
                Ok(keep_alive) => keep_alive,
                Err(_) => return Ok(Next::Close),
            }
        };
        // Closing with the client's bytes unread makes the kernel reset the connection, which
        // can destroy the answer before the client reads it: those ends linger.
        match fed.get().copied() {
            Some(BodyEnd::Complete) if written => Ok(Next::KeepAlive),
            Some(BodyEnd::Complete) => Ok(Next::Close),
            Some(BodyEnd::Broken) => Ok(Next::Linger),
            // Refused without `100 Continue`: the client may never send the body, or may send
            // it later; either way nothing after it can be trusted to be the next request.
            _ if expect_continue && !continued => Ok(Next::Linger),
            // The body was not all read: skip a small rest, or close.
            Some(BodyEnd::Abandoned) | None => {
                match written && drain(self.reader, self.buf, &mut decoder, self.stop).await {
                    true => Ok(Next::KeepAlive),
                    false => Ok(Next::Linger),
                }
            }
        }
    }
}

/// Resolves when the client closes its side (or the socket fails). Bytes that arrive first
/// are the next pipelined request: they are kept in `buf`, and the watch ends there, as
/// nothing more can be learnt without reading further ahead.
async fn until_closed(reader: &mut impl Reader, buf: &mut BytesMut) {
    // A pipelined request already read: its client wants it answered even if it has shut its
    // side since (`printf ... | nc -N`).
    if !buf.is_empty() {
        return std::future::pending().await;
    }
    if reader.ready().await.is_err() {
        return;
    }
    make_room(buf, READ_SIZE);
    // Past readiness the read waits only if readiness was spurious, or if the stream reads
    // through buffers of its own (TLS), where the read is the wait.
    match reader.read_buf(buf).await {
        Ok(0) | Err(_) => {}
        Ok(_) => std::future::pending().await,
    }
}

/// Decodes the body from the socket into `feed`, a frame at a time, as the reader takes them.
async fn feed_body(
    reader: &mut impl Reader,
    buf: &mut BytesMut,
    decoder: &mut Decoder,
    feed: Option<mpsc::Sender<Fed>>,
) -> BodyEnd {
    let Some(feed) = feed else {
        return BodyEnd::Complete;
    };
    loop {
        let Ok(permit) = feed.reserve().await else {
            return BodyEnd::Abandoned;
        };
        loop {
            match decoder.decode(buf) {
                Ok(Decoded::Data(data)) => {
                    permit.send(Fed::Frame(http_body::Frame::data(data)));
                    break;
                }
                Ok(Decoded::Trailers(trailers)) => {
                    permit.send(Fed::Frame(http_body::Frame::trailers(trailers)));
                    break;
                }
                Ok(Decoded::End) => {
                    permit.send(Fed::End);
                    return BodyEnd::Complete;
                }
                Ok(Decoded::NeedMore) => {
                    make_room(buf, 2 * READ_SIZE);
                    match reader.read_buf(buf).await {
                        Ok(0) => {
                            permit.send(Fed::Failed(BodyError::Incomplete));
                            return BodyEnd::Broken;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            permit.send(Fed::Failed(BodyError::Io(e)));
                            return BodyEnd::Broken;
                        }
                    }
                }
                Err(e) => {
                    permit.send(Fed::Failed(BodyError::Decode(e)));
                    return BodyEnd::Broken;
                }
            }
        }
    }
}

/// Skips the rest of a body nobody read, if it is small and arrives soon: `true` when the
/// connection can carry the next request.
async fn drain(
    reader: &mut impl Reader,
    buf: &mut BytesMut,
    decoder: &mut Decoder,
    stop: &watch::Receiver<bool>,
) -> bool {
    if *stop.borrow() || decoder.remaining().is_some_and(|left| left > DRAIN_LIMIT) {
        return false;
    }
    let skipping = async {
        let mut skipped = 0u64;
        loop {
            match decoder.decode(buf) {
                Ok(Decoded::Data(data)) => skipped += data.len() as u64,
                Ok(Decoded::Trailers(_)) => {}
                Ok(Decoded::End) => return true,
                Ok(Decoded::NeedMore) => {
                    make_room(buf, READ_SIZE);
                    if !matches!(reader.read_buf(buf).await, Ok(n) if n > 0) {
                        return false;
                    }
                }
                Err(_) => return false,
            }
            if skipped > DRAIN_LIMIT {
                return false;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(1), skipping)
        .await
        .unwrap_or(false)
}

/// Closes after an error answer without losing it: a socket closed with unread bytes is
/// reset, and a reset can destroy the answer before the client reads it. So the write side is
/// shut first and what the client still sends is read away for a moment.
async fn linger(mut reader: impl Reader, mut writer: impl AsyncWrite + Unpin) {
    let _ = writer.shutdown().await;
    // On the heap: an array here would be room in every connection's future.
    let mut sink = vec![0u8; 4096];
    let reading = async {
        let mut total = 0usize;
        while let Ok(n) = reader.read(&mut sink).await {
            total += n;
            if n == 0 || total > 256 * 1024 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), reading).await;
}
