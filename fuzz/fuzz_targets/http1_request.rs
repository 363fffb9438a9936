//! The client-facing HTTP/1.1 parser and body decoder (`hoard::http1`): no input may panic
//! them, what hoard accepts httparse must accept too (hoard is only ever stricter), an
//! accepted head obeys RFC 9112's framing rules, and bytes arriving in pieces give the same
//! verdict as arriving whole.
#![no_main]

use bytes::BytesMut;
use hoard::http1::decode::{self, Decoded, Decoder};
use hoard::http1::head::{self, Framing};
use libfuzzer_sys::fuzz_target;

const MAX_HEAD: usize = 8192;

fuzz_target!(|data: &[u8]| {
    check_head(data);
    check_chunked(data);
});

fn check_head(data: &[u8]) {
    let mut whole = BytesMut::from(data);
    let verdict = head::parse(&mut whole, MAX_HEAD);
    if data.len() <= 512 {
        // Arriving a byte more at a time: undecided until the same verdict as whole.
        for end in 0..data.len() {
            let mut prefix = BytesMut::from(&data[..end]);
            if let Ok(Some(_)) | Err(_) = head::parse(&mut prefix, MAX_HEAD) {
                let mut again = BytesMut::from(data);
                let whole_again = head::parse(&mut again, MAX_HEAD);
                assert_eq!(
                    format!("{:?}", head::parse(&mut BytesMut::from(&data[..end]), MAX_HEAD).map(|h| h.map(|h| h.framing))),
                    format!("{:?}", whole_again.map(|h| h.map(|h| h.framing))),
                    "a prefix decided differently"
                );
                break;
            }
        }
    }
    let Ok(Some(parsed)) = verdict else {
        return;
    };
    let start = data
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(data.len());
    let head_bytes = &data[start..data.len() - whole.len()];
    let mut fields = [httparse::EMPTY_HEADER; head::MAX_FIELDS];
    let mut request = httparse::Request::new(&mut fields);
    let status = request
        .parse(head_bytes)
        .expect("hoard accepted a head httparse rejects");
    assert_eq!(status, httparse::Status::Complete(head_bytes.len()));
    assert_eq!(Some(parsed.request.method().as_str()), request.method);
    // No bare LF line ends, no obs-fold (httparse refuses it in requests).
    for (at, &b) in head_bytes.iter().enumerate() {
        assert!(b != b'\n' || (at > 0 && head_bytes[at - 1] == b'\r'), "bare LF accepted");
    }
    let headers = parsed.request.headers();
    let te = headers.contains_key(http::header::TRANSFER_ENCODING);
    match parsed.framing {
        Framing::Chunked => {
            assert!(te);
            assert!(!headers.contains_key(http::header::CONTENT_LENGTH), "CL kept beside TE");
            assert_eq!(parsed.request.version(), http::Version::HTTP_11);
        }
        Framing::Length(n) => {
            assert!(!te);
            for value in headers.get_all(http::header::CONTENT_LENGTH) {
                for item in value.as_bytes().split(|&b| b == b',') {
                    assert_eq!(std::str::from_utf8(item.trim_ascii()).unwrap().parse::<u64>().unwrap(), n);
                }
            }
        }
        Framing::None => assert!(!te && !headers.contains_key(http::header::CONTENT_LENGTH)),
    }
    let decoder = match parsed.framing {
        Framing::Chunked => Decoder::chunked(),
        Framing::Length(n) => Decoder::length(n),
        Framing::None => Decoder::Done,
    };
    decode_whole(decoder, &whole);
}

/// The chunked decoder over raw bytes: every size line it accepts, httparse reads the same
/// way; whole and byte-at-a-time decoding agree.
fn check_chunked(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    let mut decoder = Decoder::chunked();
    loop {
        if decoder == Decoder::chunked() {
            if let Ok(Some((line, size))) = decode::size_line(&buf) {
                match httparse::parse_chunk_size(&buf) {
                    Ok(httparse::Status::Complete((consumed, parsed))) => {
                        assert_eq!((consumed, parsed), (line, size), "chunk size read differently");
                    }
                    other => panic!("hoard accepted a chunk size line httparse reads as {other:?}"),
                }
            }
        }
        match decoder.decode(&mut buf) {
            Ok(Decoded::Data(_) | Decoded::Trailers(_)) => {}
            _ => break,
        }
    }
    let whole = decode_whole(Decoder::chunked(), data);
    if data.len() <= 2048 {
        let mut pieces = BytesMut::new();
        let mut decoder = Decoder::chunked();
        let mut body = Vec::new();
        let mut verdict = None;
        'feed: for &byte in data {
            pieces.extend_from_slice(&[byte]);
            loop {
                match decoder.decode(&mut pieces) {
                    Ok(Decoded::Data(bytes)) => body.extend_from_slice(&bytes),
                    Ok(Decoded::Trailers(_)) => {}
                    Ok(Decoded::NeedMore) => break,
                    Ok(Decoded::End) => {
                        verdict = Some(Ok(()));
                        break 'feed;
                    }
                    Err(e) => {
                        verdict = Some(Err(e));
                        break 'feed;
                    }
                }
            }
        }
        if let (Some(verdict), Some((whole_body, whole_verdict))) = (verdict, whole) {
            assert_eq!(verdict, whole_verdict, "pieces and whole disagree");
            if verdict.is_ok() {
                assert_eq!(body, whole_body);
            }
        }
    }
}

/// Decodes `data` at once: the body and how it ended, or `None` if it needs more bytes.
fn decode_whole(
    mut decoder: Decoder,
    data: &[u8],
) -> Option<(Vec<u8>, Result<(), decode::DecodeError>)> {
    let mut buf = BytesMut::from(data);
    let mut body = Vec::new();
    loop {
        match decoder.decode(&mut buf) {
            Ok(Decoded::Data(bytes)) => {
                assert!(!bytes.is_empty());
                body.extend_from_slice(&bytes);
            }
            Ok(Decoded::Trailers(_)) => {}
            Ok(Decoded::End) => return Some((body, Ok(()))),
            Ok(Decoded::NeedMore) => return None,
            Err(e) => return Some((body, Err(e))),
        }
    }
}
