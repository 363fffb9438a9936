//! One client connection, start to end: wait for a request head (holding no buffer while
//! idle), parse it (`head.rs`), hand the request to the service while feeding its body from
//! the socket (`decode.rs`, `body.rs`), relay interim responses, write the final response
//! (`encode.rs`, gathered into few `writev`s, or by `sendfile` from a cache file), then either
//! read the next request, hand the socket to a CONNECT tunnel, or close.
//!
//! Requests on one connection are answered strictly in order (pipelining is read one request
//! at a time). This module decides nothing about proxying: the service does.

use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::FutureExt;
use http::header::HeaderMap;
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::body::{BodyError, Fed, RequestBody};
use super::decode::{Decoded, Decoder};
use super::encode::{self, Answering, Framing};
use super::head::{self, HeadError, RequestHead};
use super::upgrade::{OnUpgrade, Upgraded};
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
/// Response bytes gathered into one `writev`.
const GATHER: usize = 256 * 1024;

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
pub async fn serve<S: Service>(
    stream: TcpStream,
    settings: Settings,
    service: &S,
    mut stop: watch::Receiver<bool>,
) {
    let (mut reader, mut writer) = stream.into_split();
    let mut buf = BytesMut::new();
    let mut interims = Interims {
        queue: Arc::default(),
        exchanges: 0,
    };
    loop {
        let head = match read_head(&mut reader, &mut buf, settings, &mut stop).await {
            Ok(Some(head)) => head,
            Ok(None) | Err(ReadError::Io) => return,
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
        let exchange = Exchange {
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
            Ok(Next::Close) => return,
            Ok(Next::Linger) => return linger(reader, writer).await,
            Err(upgrade) => {
                let early = buf.split().freeze();
                if let Ok(stream) = reader.reunite(writer) {
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
    reader: &mut OwnedReadHalf,
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
                ready = reader.readable() => ready.map_err(|_| ReadError::Io)?,
                () = tokio::time::sleep_until(deadline) => return Ok(None),
                _ = stop.changed() => return Ok(None),
            }
        }
        if buf.capacity() == 0 {
            *buf = take_buffer();
        } else {
            make_room(buf, READ_SIZE);
        }
        let read = tokio::time::timeout_at(deadline, reader.read_buf(buf)).await;
        match read {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return Ok(None),
            Ok(Ok(_)) => {}
        }
    }
}

/// One request and its response on a connection.
struct Exchange<'a> {
    reader: &'a mut OwnedReadHalf,
    writer: &'a mut OwnedWriteHalf,
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

impl Exchange<'_> {
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
                            if writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.is_err() {
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
async fn until_closed(reader: &mut OwnedReadHalf, buf: &mut BytesMut) {
    // A pipelined request already read: its client wants it answered even if it has shut its
    // side since (`printf ... | nc -N`).
    if !buf.is_empty() {
        return std::future::pending().await;
    }
    loop {
        if reader.readable().await.is_err() {
            return;
        }
        make_room(buf, READ_SIZE);
        match reader.try_read_buf(buf) {
            Ok(0) => return,
            Ok(_) => return std::future::pending().await,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// Decodes the body from the socket into `feed`, a frame at a time, as the reader takes them.
async fn feed_body(
    reader: &mut OwnedReadHalf,
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
    reader: &mut OwnedReadHalf,
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

async fn write_interim(
    writer: &mut OwnedWriteHalf,
    status: StatusCode,
    headers: &HeaderMap,
) -> io::Result<()> {
    // 100 belongs to this hop's own Expect handling and 101 to upgrades, which hoard does not
    // relay; the rest (102, 103, ...) go to the client as they came.
    if status == StatusCode::CONTINUE || status == StatusCode::SWITCHING_PROTOCOLS {
        return Ok(());
    }
    let mut out = Vec::with_capacity(256);
    encode::interim_head(status, headers, &mut out);
    writer.write_all(&out).await
}

/// Writes the response; `Ok(true)` if the connection can carry another request.
async fn respond<B>(
    writer: &mut OwnedWriteHalf,
    response: Response<B>,
    answering: Answering,
    keep_alive: bool,
) -> io::Result<bool>
where
    B: Body<Data = Bytes> + FileBody + Unpin,
{
    let mut head = Vec::with_capacity(512);
    let (framing, keep_alive) = encode::response_head(&response, answering, keep_alive, &mut head);
    let mut body = response.into_body();
    let mut out = Gather::default();
    out.push(Bytes::from(head));
    if framing == Framing::None {
        out.flush(writer).await?;
        return Ok(keep_alive);
    }
    if let Framing::Length(length) = framing
        && let Some(file) = body.file()
    {
        out.flush(writer).await?;
        let (sent, failed) = super::sendfile::send(writer, &file, length).await;
        body.sent_from_file(sent);
        return match failed {
            None => Ok(keep_alive),
            Some(error) => Err(error),
        };
    }
    let mut sent = 0u64;
    loop {
        let next = if out.is_empty() {
            body.frame().await
        } else {
            match body.frame().now_or_never() {
                Some(next) => next,
                None => {
                    out.flush(writer).await?;
                    continue;
                }
            }
        };
        let data = match next {
            None => break,
            Some(Err(_)) => {
                // What went is all the client gets; the connection's end tells it the body
                // is short (chunked: no last chunk; length: too few bytes).
                out.flush(writer).await?;
                return Ok(false);
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if !data.is_empty() => data,
                // Trailers are not sent on: no client of a cache asked for them.
                _ => continue,
            },
        };
        let len = data.len() as u64;
        match framing {
            Framing::Length(length) if sent + len > length => {
                // More than it declared: send what was declared and no more.
                out.push(data.slice(..(length - sent) as usize));
                out.flush(writer).await?;
                return Ok(false);
            }
            Framing::Chunked => {
                out.push(encode::chunk_line(data.len()));
                out.push(data);
                out.push(Bytes::from_static(b"\r\n"));
            }
            _ => out.push(data),
        }
        sent += len;
        if out.len >= GATHER {
            out.flush(writer).await?;
        }
    }
    match framing {
        Framing::Chunked => out.push(Bytes::from_static(b"0\r\n\r\n")),
        Framing::Length(length) if sent != length => {
            out.flush(writer).await?;
            return Ok(false);
        }
        _ => {}
    }
    out.flush(writer).await?;
    Ok(keep_alive)
}

/// Response pieces waiting to go out in one `writev`.
#[derive(Default)]
struct Gather {
    parts: VecDeque<Bytes>,
    len: usize,
}

impl Gather {
    fn push(&mut self, part: Bytes) {
        self.len += part.len();
        self.parts.push_back(part);
    }

    fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    async fn flush(&mut self, writer: &mut OwnedWriteHalf) -> io::Result<()> {
        const MAX_SLICES: usize = 64;
        while !self.parts.is_empty() {
            // The slices live only inside one poll, not in the future across awaits.
            let parts = &self.parts;
            let mut written = std::future::poll_fn(|cx| {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let count = parts.len().min(MAX_SLICES);
                for (slice, part) in slices.iter_mut().zip(parts) {
                    *slice = IoSlice::new(part);
                }
                Pin::new(&mut *writer).poll_write_vectored(cx, &slices[..count])
            })
            .await?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.len -= written;
            while written > 0 {
                let first = self
                    .parts
                    .front_mut()
                    .expect("written bytes came from parts");
                if first.len() <= written {
                    written -= first.len();
                    self.parts.pop_front();
                } else {
                    first.advance(written);
                    written = 0;
                }
            }
        }
        Ok(())
    }
}

/// Closes after an error answer without losing it: a socket closed with unread bytes is
/// reset, and a reset can destroy the answer before the client reads it. So the write side is
/// shut first and what the client still sends is read away for a moment.
async fn linger(mut reader: OwnedReadHalf, mut writer: OwnedWriteHalf) {
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
