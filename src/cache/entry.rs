//! `StoredResponse`: one cached response's metadata (status, headers in order, the request
//! values it varies on, freshness, where and how long its body is, its checksum), and its
//! encoding for the persistent index.

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use http::header::{HeaderMap, HeaderName, HeaderValue, InvalidHeaderValue};
use serde::{Deserialize, Serialize};

use super::key::CacheKey;
use super::policy::Freshness;
use super::storage::{BodyId, BodyRef, footprint};
use crate::http1::HeaderCase;

/// A cached response without its body.
#[derive(Debug, Clone)]
pub struct StoredResponse {
    pub key: CacheKey,
    /// Normalised request values for the fields in the response's `Vary`.
    pub vary: Vec<(String, Option<String>)>,
    pub status: StatusCode,
    /// The origin's reason phrase when it was not the canonical one.
    pub reason: Option<Bytes>,
    /// The origin's header fields minus hop-by-hop ones, in order, repeats kept.
    pub headers: HeaderMap,
    /// How the origin spelled the names of `headers`, when not all lowercase. Stored as the
    /// names themselves (a record written before spelling was kept reads back lowercase).
    pub spelling: Option<Arc<HeaderCase>>,
    pub freshness: Freshness,
    pub body: BodyId,
    pub body_len: u64,
    pub checksum: [u8; 32],
}

/// The serialised form, stored in the index database.
#[derive(Serialize, Deserialize)]
struct Record {
    version: u8,
    url: String,
    vary: Vec<(String, Option<String>)>,
    status: u16,
    reason: Option<Vec<u8>>,
    headers: Vec<(String, Vec<u8>)>,
    freshness: FreshnessRecord,
    body: BodyId,
    body_len: u64,
    checksum: [u8; 32],
}

const RECORD_VERSION: u8 = 1;

/// `Freshness` as the index stores it: its own type, so that a field added to the in-memory
/// `Freshness` does not silently change the on-disk format (which `RECORD_VERSION` and the
/// test of a version-1 record guard).
#[derive(Serialize, Deserialize)]
struct FreshnessRecord {
    response_time: u64,
    initial_age: u64,
    lifetime: u64,
    must_revalidate: bool,
    no_cache: bool,
    stale_while_revalidate: Option<u64>,
    stale_if_error: Option<u64>,
}

impl From<&Freshness> for FreshnessRecord {
    fn from(f: &Freshness) -> Self {
        FreshnessRecord {
            response_time: f.response_time,
            initial_age: f.initial_age,
            lifetime: f.lifetime,
            must_revalidate: f.must_revalidate,
            no_cache: f.no_cache,
            stale_while_revalidate: f.stale_while_revalidate,
            stale_if_error: f.stale_if_error,
        }
    }
}

impl From<FreshnessRecord> for Freshness {
    fn from(f: FreshnessRecord) -> Self {
        Freshness {
            response_time: f.response_time,
            initial_age: f.initial_age,
            lifetime: f.lifetime,
            must_revalidate: f.must_revalidate,
            no_cache: f.no_cache,
            stale_while_revalidate: f.stale_while_revalidate,
            stale_if_error: f.stale_if_error,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("corrupt index record: {0}")]
    Format(#[from] postcard::Error),
    #[error("index record version {0} is not supported")]
    Version(u8),
    #[error("index record has an invalid {0}")]
    Field(&'static str),
}

impl StoredResponse {
    /// Where its body is, for reading it from the tiers.
    pub(super) fn body_ref(&self) -> BodyRef {
        BodyRef {
            id: self.body,
            len: self.body_len,
            checksum: self.checksum,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let record = Record {
            version: RECORD_VERSION,
            url: self.key.url().to_owned(),
            vary: self.vary.clone(),
            status: self.status.as_u16(),
            reason: self.reason.as_ref().map(|r| r.to_vec()),
            headers: self
                .headers
                .iter()
                .map(|(name, value)| {
                    let spelled = match &self.spelling {
                        Some(case) => {
                            let mut spelled = Vec::new();
                            case.write(name, &mut spelled);
                            String::from_utf8_lossy(&spelled).into_owned()
                        }
                        None => name.as_str().to_owned(),
                    };
                    (spelled, value.as_bytes().to_vec())
                })
                .collect(),
            freshness: FreshnessRecord::from(&self.freshness),
            body: self.body,
            body_len: self.body_len,
            checksum: self.checksum,
        };
        postcard::to_allocvec(&record).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<StoredResponse, DecodeError> {
        let record: Record = postcard::from_bytes(bytes)?;
        if record.version != RECORD_VERSION {
            return Err(DecodeError::Version(record.version));
        }
        let values = in_one_buffer(|| record.headers.iter().map(|(_, value)| value.as_slice()));
        let mut headers = HeaderMap::with_capacity(record.headers.len());
        for ((name, _), value) in record.headers.iter().zip(values) {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| DecodeError::Field("header name"))?;
            headers.append(name, value.map_err(|_| DecodeError::Field("header value"))?);
        }
        let spelling = HeaderCase::from_names(record.headers.iter().map(|(n, _)| n.as_bytes()));
        Ok(StoredResponse {
            spelling: (!spelling.is_empty()).then(|| Arc::new(spelling)),
            key: CacheKey::from_url(record.url),
            vary: record.vary,
            status: StatusCode::from_u16(record.status)
                .map_err(|_| DecodeError::Field("status"))?,
            reason: record.reason.map(Bytes::from),
            headers,
            freshness: record.freshness.into(),
            body: record.body,
            body_len: record.body_len,
            checksum: record.checksum,
        })
    }

    /// The URL in an encoded record, read without decoding the rest (for scans of every row).
    pub fn url_in(bytes: &[u8]) -> Option<&str> {
        // A record starts with its version and URL; postcard encodes a struct as its fields
        // in order, so the tuple of the first two reads them.
        match postcard::take_from_bytes::<(u8, &str)>(bytes) {
            Ok(((RECORD_VERSION, url), _)) => Some(url),
            _ => None,
        }
    }

    /// About what this head takes in memory (the heads of recent entries are kept).
    pub fn memory_size(&self) -> u64 {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 32)
            .sum();
        let vary: usize = self
            .vary
            .iter()
            .map(|(n, v)| n.len() + v.as_ref().map_or(0, String::len) + 56)
            .sum();
        (std::mem::size_of::<StoredResponse>() + self.key.url().len() + headers + vary + 64) as u64
    }

    /// What this entry occupies on disk, for the disk bound: its body (`storage::footprint`)
    /// and its row in the index database (the encoded record, in B-tree pages that are about
    /// half full: random inserts, and pages a commit replaced are kept until the next one).
    pub fn weight(&self) -> u64 {
        let head: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum();
        let row = (head + self.key.url().len()) as u64 + 128;
        footprint(self.body_len) + row * 2
    }
}

/// A copy of `headers` whose values share one new buffer. A stored entry must not keep the
/// buffer its response was parsed from alive: hyper reads a head into an 8 KiB buffer, and a
/// value pointing into it pins all of it (measured: 9 KB per entry filled live, against 2.8
/// after a restart). One allocation per entry is also cheaper than one per value.
pub(super) fn compact_headers(headers: &HeaderMap) -> HeaderMap {
    let values = in_one_buffer(|| headers.values().map(HeaderValue::as_bytes));
    let mut compact = HeaderMap::with_capacity(headers.len());
    for ((name, value), copy) in headers.iter().zip(values) {
        let mut copy = copy.unwrap_or_else(|_| value.clone());
        copy.set_sensitive(value.is_sensitive());
        compact.append(name.clone(), copy);
    }
    compact
}

/// The values `values()` yields (it is called twice: to size and fill the buffer, then to cut
/// it), as header values that all share one new buffer, in order.
fn in_one_buffer<'a, I: Iterator<Item = &'a [u8]>>(
    values: impl Fn() -> I,
) -> impl Iterator<Item = Result<HeaderValue, InvalidHeaderValue>> {
    let buffer = Bytes::from(values().flatten().copied().collect::<Vec<u8>>());
    let mut at = 0;
    values().map(move |value| {
        let slice = buffer.slice(at..at + value.len());
        at += value.len();
        HeaderValue::from_maybe_shared(slice)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_headers_keep_names_values_order_and_repeats() {
        let mut headers = HeaderMap::new();
        headers.append("set-cookie", HeaderValue::from_static("a=1"));
        headers.append("x-long", HeaderValue::from_bytes(&[b'x'; 300]).unwrap());
        headers.append("set-cookie", HeaderValue::from_static("c=2"));
        headers.append("etag", HeaderValue::from_static("\"v1\""));
        let compact = compact_headers(&headers);
        let pairs = |map: &HeaderMap| {
            map.iter()
                .map(|(n, v)| (n.clone(), v.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(pairs(&compact), pairs(&headers));
    }

    /// `sample()` as version 1 wrote it (postcard, hex). A change to the record's layout must
    /// keep this decoding, or bump `RECORD_VERSION` and migrate.
    const VERSION_1_SAMPLE: &str = "010a687474703a2f2f682f7002066163636570740109746578742f68746d6c017800ab0201034f6464030a7365742d636f6f6b696503613d310a7365742d636f6f6b696503633d3203782d62016201020301000104002a070909090909090909090909090909090909090909090909090909090909090909";

    #[test]
    fn a_record_written_by_version_1_is_read() {
        let bytes: Vec<u8> = (0..VERSION_1_SAMPLE.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&VERSION_1_SAMPLE[i..i + 2], 16).unwrap())
            .collect();
        let old = StoredResponse::decode(&bytes).unwrap();
        let sample = sample();
        assert_eq!(old.key, sample.key);
        assert_eq!(old.freshness, sample.freshness);
        assert_eq!(old.headers, sample.headers);
        assert_eq!(
            old.encode(),
            bytes,
            "today's encoding of it is still version 1"
        );
    }

    /// An entry with every field set to something recognisable.
    fn sample() -> StoredResponse {
        let mut headers = HeaderMap::new();
        headers.append("set-cookie", HeaderValue::from_static("a=1"));
        headers.append("x-b", HeaderValue::from_static("b"));
        headers.append("set-cookie", HeaderValue::from_static("c=2"));
        StoredResponse {
            spelling: None,
            key: CacheKey::from_url("http://h/p".into()),
            vary: vec![
                ("accept".into(), Some("text/html".into())),
                ("x".into(), None),
            ],
            status: StatusCode::from_u16(299).unwrap(),
            reason: Some(Bytes::from_static(b"Odd")),
            headers,
            freshness: Freshness {
                response_time: 1,
                initial_age: 2,
                lifetime: 3,
                must_revalidate: true,
                no_cache: false,
                stale_while_revalidate: Some(4),
                stale_if_error: None,
            },
            body: 42,
            body_len: 7,
            checksum: [9; 32],
        }
    }

    #[test]
    fn round_trips_headers_in_order_with_repeats() {
        let entry = sample();
        let back = StoredResponse::decode(&entry.encode()).unwrap();
        assert_eq!(back.key, entry.key);
        assert_eq!(back.vary, entry.vary);
        assert_eq!(back.status, entry.status);
        assert_eq!(back.reason, entry.reason);
        let cookies: Vec<_> = back.headers.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, vec!["a=1", "c=2"]);
        assert_eq!(back.freshness, entry.freshness);
        assert_eq!((back.body, back.body_len, back.checksum), (42, 7, [9; 32]));
    }

    #[test]
    fn the_url_is_read_without_decoding_the_rest() {
        let entry = sample();
        assert_eq!(StoredResponse::url_in(&entry.encode()), Some("http://h/p"));
        assert_eq!(StoredResponse::url_in(b"\x09garbage"), None);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [&b""[..], b"\x01", b"\xff\xff\xff\xff", &[1u8; 64]] {
            assert!(StoredResponse::decode(bytes).is_err());
        }
    }
}
