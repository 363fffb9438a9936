//! Writing to the client: interim heads, `100 Continue`, and final responses (`encode.rs`
//! heads, bodies gathered into few `writev`s, or sent with `sendfile` from a cache file when
//! the connection is a plain socket).

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;

use bytes::{Buf, Bytes};
use futures_util::FutureExt;
use http::header::HeaderMap;
use http::{Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;

use super::FileBody;
use super::encode::{self, Answering, Framing};
use super::transport::Writer;

/// Response bytes gathered into one `writev`.
const GATHER: usize = 256 * 1024;

pub(super) async fn write_interim(
    writer: &mut impl Writer,
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
    writer.write_all(&out).await?;
    writer.flush().await
}

/// Tells the client to send the body it announced with `Expect: 100-continue`.
pub(super) async fn write_continue(writer: &mut impl Writer) -> io::Result<()> {
    writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
    writer.flush().await
}

/// Writes the response; `Ok(true)` if the connection can carry another request.
pub(super) async fn respond<B>(
    writer: &mut impl Writer,
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
        && let Some(socket) = writer.socket()
    {
        out.flush(socket).await?;
        let (sent, failed) = super::sendfile::send(socket, &file, length).await;
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

    async fn flush(&mut self, writer: &mut impl Writer) -> io::Result<()> {
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
        // A TLS stream may hold the last record until flushed; a socket's flush does nothing.
        writer.flush().await
    }
}
