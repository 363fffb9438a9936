//! Request body decoding: a state machine that takes a body's bytes out of the connection's
//! read buffer, by Content-Length or by the chunked coding (RFC 9112 §7.1) with its trailer
//! section. Strict: a chunk line must end in CRLF, a size is hex digits only, and nothing after
//! a size but chunk extensions; anything else is an error, never a guess. Pure, so the fuzz
//! target drives it directly; it does no I/O.

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

/// The longest chunk-size line, extensions included. Generous for real extensions, small
/// enough that a client cannot make hoard buffer a line without end.
const MAX_CHUNK_LINE: usize = 4096;
/// The most trailer-section bytes kept, and fields in it.
const MAX_TRAILERS: usize = 16 * 1024;
const MAX_TRAILER_FIELDS: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("invalid chunk size line")]
    ChunkSize,
    #[error("a chunk's data is not followed by CRLF")]
    ChunkEnd,
    #[error("invalid trailer section")]
    Trailers,
}

/// One step of decoding.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    Data(Bytes),
    Trailers(HeaderMap),
    /// The body is complete; its bytes have all been taken from the buffer.
    End,
    /// The buffer holds no complete step: read more.
    NeedMore,
}

/// Where a chunked body's decoding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: the trailer section and its empty line.
    Trailers,
}

/// A body's decoder: by length, by chunks, or finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoder {
    Length(u64),
    Chunked(Chunk),
    Done,
}

impl Decoder {
    pub fn length(length: u64) -> Decoder {
        if length == 0 {
            Decoder::Done
        } else {
            Decoder::Length(length)
        }
    }

    pub fn chunked() -> Decoder {
        Decoder::Chunked(Chunk::Size)
    }

    /// Bytes the body still has to come, when known (Content-Length).
    pub fn remaining(&self) -> Option<u64> {
        match *self {
            Decoder::Length(n) => Some(n),
            Decoder::Done => Some(0),
            Decoder::Chunked(_) => None,
        }
    }

    /// Takes the next step's bytes from `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, DecodeError> {
        loop {
            match *self {
                Decoder::Done => return Ok(Decoded::End),
                Decoder::Length(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = left.min(buf.len() as u64);
                    *self = Decoder::length(left - take);
                    return Ok(Decoded::Data(buf.split_to(take as usize).freeze()));
                }
                Decoder::Chunked(Chunk::Size) => {
                    let Some((line, size)) = size_line(buf)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    buf.advance(line);
                    *self = Decoder::Chunked(if size == 0 {
                        Chunk::Trailers
                    } else {
                        Chunk::Data(size)
                    });
                }
                Decoder::Chunked(Chunk::Data(left)) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = left.min(buf.len() as u64);
                    *self = Decoder::Chunked(if take == left {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left - take)
                    });
                    return Ok(Decoded::Data(buf.split_to(take as usize).freeze()));
                }
                Decoder::Chunked(Chunk::DataEnd) => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(DecodeError::ChunkEnd);
                    }
                    buf.advance(2);
                    *self = Decoder::Chunked(Chunk::Size);
                }
                Decoder::Chunked(Chunk::Trailers) => return self.trailers(buf),
            }
        }
    }

    fn trailers(&mut self, buf: &mut BytesMut) -> Result<Decoded, DecodeError> {
        if buf.first() == Some(&b'\n') {
            return Err(DecodeError::Trailers);
        }
        if buf.starts_with(b"\r\n") {
            buf.advance(2);
            *self = Decoder::Done;
            return Ok(Decoded::End);
        }
        let mut fields = [httparse::EMPTY_HEADER; MAX_TRAILER_FIELDS];
        match httparse::parse_headers(buf, &mut fields) {
            Ok(httparse::Status::Complete((len, fields))) => {
                // httparse takes a bare LF as a line end; a stricter parser in front would
                // not end the body here.
                if super::head::has_bare_lf(&buf[..len]) {
                    return Err(DecodeError::Trailers);
                }
                let mut trailers = HeaderMap::with_capacity(fields.len());
                for field in fields.iter() {
                    let name = HeaderName::from_bytes(field.name.as_bytes())
                        .map_err(|_| DecodeError::Trailers)?;
                    let value =
                        HeaderValue::from_bytes(field.value).map_err(|_| DecodeError::Trailers)?;
                    trailers.append(name, value);
                }
                buf.advance(len);
                *self = Decoder::Done;
                Ok(Decoded::Trailers(trailers))
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_TRAILERS => Ok(Decoded::NeedMore),
            _ => Err(DecodeError::Trailers),
        }
    }
}

/// The chunk-size line at the start of `buf`: its length with the CRLF, and the size.
/// `None` until the whole line has arrived.
pub fn size_line(buf: &[u8]) -> Result<Option<(usize, u64)>, DecodeError> {
    match find_line(buf, MAX_CHUNK_LINE, DecodeError::ChunkSize)? {
        Some(end) => Ok(Some((end + 2, chunk_size(&buf[..end])?))),
        None => Ok(None),
    }
}

/// Where the CRLF ending the line at the start of `buf` is; `None` if it has not arrived.
/// A bare LF or CR, or a line longer than `max`, is `error`.
fn find_line(buf: &[u8], max: usize, error: DecodeError) -> Result<Option<usize>, DecodeError> {
    match buf.iter().take(max).position(|&b| b == b'\n' || b == b'\r') {
        Some(at) if buf[at] == b'\r' => match buf.get(at + 1) {
            Some(b'\n') => Ok(Some(at)),
            Some(_) => Err(error),
            None => Ok(None),
        },
        Some(_) => Err(error),
        None if buf.len() >= max => Err(error),
        None => Ok(None),
    }
}

/// `chunk-size [ chunk-ext ]` (RFC 9112 §7.1.1): hex digits, at most 16 of them, then nothing
/// or `;` extensions (optionally after whitespace). Extensions are ignored but must be
/// printable.
fn chunk_size(line: &[u8]) -> Result<u64, DecodeError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(DecodeError::ChunkSize);
    }
    // Only SP and HTAB may stand between the size and `;` (BWS): `trim_ascii` would also
    // take form feeds and such, which other parsers read as part of the size.
    let rest = &line[digits..];
    let rest = &rest[rest
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count()..];
    if !rest.is_empty()
        && (rest[0] != b';' || rest.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f))
    {
        return Err(DecodeError::ChunkSize);
    }
    let text = std::str::from_utf8(&line[..digits]).map_err(|_| DecodeError::ChunkSize)?;
    u64::from_str_radix(text, 16).map_err(|_| DecodeError::ChunkSize)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The data, the trailers and what is left over.
    type Decoding = (Vec<u8>, Option<HeaderMap>, Vec<u8>);

    /// Decodes all of `input` at once.
    fn decode_all(mut decoder: Decoder, input: &[u8]) -> Result<Decoding, DecodeError> {
        let mut buf = BytesMut::from(input);
        let mut data = Vec::new();
        let mut trailers = None;
        loop {
            match decoder.decode(&mut buf)? {
                Decoded::Data(bytes) => data.extend_from_slice(&bytes),
                Decoded::Trailers(fields) => trailers = Some(fields),
                Decoded::End => return Ok((data, trailers, buf.to_vec())),
                Decoded::NeedMore => return Err(DecodeError::ChunkEnd),
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_with_extensions_and_trailers() {
        let (data, trailers, rest) = decode_all(
            Decoder::chunked(),
            b"5;name=value\r\nhello\r\n6 ; x\r\n world\r\n0\r\nX-Sum: 1\r\n\r\nGET",
        )
        .unwrap();
        assert_eq!(data, b"hello world");
        assert_eq!(trailers.unwrap()["x-sum"], "1");
        assert_eq!(rest, b"GET");
        let (data, trailers, rest) = decode_all(Decoder::chunked(), b"0\r\n\r\n").unwrap();
        assert!(data.is_empty() && trailers.is_none() && rest.is_empty());
    }

    #[test]
    fn content_length_bodies_stop_at_their_length() {
        let (data, _, rest) = decode_all(Decoder::length(5), b"helloGET").unwrap();
        assert_eq!((&data[..], &rest[..]), (&b"hello"[..], &b"GET"[..]));
        assert_eq!(Decoder::length(0), Decoder::Done);
    }

    #[test]
    fn byte_by_byte_arrival_gives_the_same_body() {
        let input = b"3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nT: v\r\n\r\n";
        let mut decoder = Decoder::chunked();
        let mut buf = BytesMut::new();
        let mut data = Vec::new();
        let mut ended = false;
        for &byte in input {
            buf.extend_from_slice(&[byte]);
            loop {
                match decoder.decode(&mut buf).unwrap() {
                    Decoded::Data(bytes) => data.extend_from_slice(&bytes),
                    Decoded::Trailers(_) => {}
                    Decoded::End => {
                        ended = true;
                        break;
                    }
                    Decoded::NeedMore => break,
                }
            }
        }
        assert!(ended);
        assert_eq!(data, b"abc0123456789abcdef");
    }

    #[test]
    fn malformed_chunking_is_an_error() {
        for input in [
            &b"zz\r\nhello\r\n0\r\n\r\n"[..],
            b"\r\nhello\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\rhello\r\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"ffffffffffffffffffff\r\nx\r\n0\r\n\r\n",
            b"-5\r\nhello\r\n0\r\n\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"5 x\r\nhello\r\n0\r\n\r\n",
            b"5;\0\r\nhello\r\n0\r\n\r\n",
            // Found by the fuzz target: a form feed after the size is not whitespace here.
            b"5\x0c\r\nhello\r\n0\r\n\r\n",
            b"0\r\nBad Name: v\r\n\r\n",
            b"0\r\n\n",
            b"0\r\nX: a\n\r\n",
            b"0\r\nX: a\r\n\n",
        ] {
            assert!(
                decode_all(Decoder::chunked(), input).is_err(),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        let endless = vec![b'1'; MAX_CHUNK_LINE + 1];
        assert_eq!(
            Decoder::chunked().decode(&mut BytesMut::from(&endless[..])),
            Err(DecodeError::ChunkSize)
        );
    }
}
