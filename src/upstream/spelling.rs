//! How an origin spelled its response's header names. hyper keeps them (`preserve_header_case`)
//! in a type only its own server can read, and hoard's client side is its own
//! (`http1`), so the origin connection notes them itself: after each request is written,
//! the bytes that come back are parsed as a response head (with `httparse`, as hyper does),
//! and the final head's names are left in `OriginKeepAlive` for the response to pick up.
//! Only plain-HTTP connections are watched (below TLS the bytes are ciphertext); an HTTPS
//! origin's names are written lowercase.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::keep_alive::OriginKeepAlive;
use crate::http1::HeaderCase;

/// The longest head watched; a longer one is left unspelled.
const MAX_HEAD: usize = 64 * 1024;

/// An origin socket that notes each response head's spelling.
pub(super) struct SpellingStream {
    stream: TcpStream,
    /// Off for TLS, whose bytes here are encrypted.
    watch: bool,
    /// Between a request's write and its final response head.
    awaiting_head: bool,
    /// A head that has arrived in parts so far.
    partial: Vec<u8>,
    noted: Arc<OriginKeepAlive>,
}

impl SpellingStream {
    pub(super) fn new(stream: TcpStream, watch: bool, noted: Arc<OriginKeepAlive>) -> Self {
        SpellingStream {
            stream,
            watch,
            awaiting_head: false,
            partial: Vec::new(),
            noted,
        }
    }

    pub(super) fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Any write starts over: a head is only ever read after the request that asked for it,
    /// and a part-head kept across a write (an upload still going out after an early answer,
    /// whose body merely began like a head) could merge with the next response's.
    fn wrote(&mut self) {
        if self.watch {
            self.awaiting_head = true;
            self.partial.clear();
        }
    }

    fn read(&mut self, bytes: &[u8]) {
        if !self.awaiting_head || bytes.is_empty() {
            return;
        }
        if self.partial.is_empty() {
            if let Some(rest) = self.heads(bytes) {
                self.partial.extend_from_slice(rest);
            }
        } else {
            self.partial.extend_from_slice(bytes);
            let partial = std::mem::take(&mut self.partial);
            if let Some(rest) = self.heads(&partial) {
                self.partial = rest.to_vec();
            }
        }
        if self.partial.len() > MAX_HEAD {
            self.give_up();
        }
    }

    /// Parses interim heads and then the final one from `bytes`; the unparsed rest when the
    /// final head has not all arrived.
    fn heads<'a>(&mut self, mut bytes: &'a [u8]) -> Option<&'a [u8]> {
        loop {
            let mut fields = [httparse::EMPTY_HEADER; crate::http1::head::MAX_FIELDS];
            let mut response = httparse::Response::new(&mut fields);
            match response.parse(bytes) {
                Ok(httparse::Status::Complete(len)) => {
                    if response.code.is_some_and(|code| (100..200).contains(&code)) {
                        bytes = &bytes[len..];
                        continue;
                    }
                    let case =
                        HeaderCase::from_names(response.headers.iter().map(|f| f.name.as_bytes()));
                    self.noted.note_spelling(case);
                    self.give_up();
                    return None;
                }
                Ok(httparse::Status::Partial) => return Some(bytes),
                Err(_) => {
                    self.give_up();
                    return None;
                }
            }
        }
    }

    fn give_up(&mut self) {
        self.awaiting_head = false;
        self.partial = Vec::new();
    }
}

impl AsyncRead for SpellingStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            this.read(&buf.filled()[before..]);
        }
        polled
    }
}

impl AsyncWrite for SpellingStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        this.wrote();
        Pin::new(&mut this.stream).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        this.wrote();
        Pin::new(&mut this.stream).poll_write_vectored(cx, data)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
