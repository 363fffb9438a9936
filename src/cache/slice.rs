//! Parts of bodies, stored on their own. Slices, like nginx's `slice` module
//! (`--slice-size`): a range request is answered from fixed-size slices of the object, each
//! fetched with a range request of its own, stored as the 206 the origin sent (under the
//! URL's key plus the slice's bytes), and freshened, revalidated and collapsed on its own
//! through the usual lookup; only the slices the range covers are fetched, so a large file
//! is never fetched whole for one range, and a whole GET can be completed from them. Pieces,
//! without slicing: a 206 for a range is stored as it came and answers ranges inside it;
//! pieces of one representation are combined.
//!
//! Parts are combined only under a strong ETag, and every part used must have the first
//! one's total length and ETag. If the object changed between parts, the response is cut off
//! (its status was already sent) and the URL's parts are forgotten, so the next request
//! starts afresh. Which parts each URL has is `parts.rs`.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{StreamExt, stream};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyStream, StreamBody};

use super::admit::Admission;
use super::key::Part;
use super::lookup::RequestHead;
use super::parts::{Piece, content_range};
use super::range::{RangeAnswer, Requested};
use super::respond::{from_origin, from_storage, header_value};
use super::revalidate::{CONDITIONALS, without_conditionals};
use super::{Cache, CacheKey, CacheOutcome, CacheStatus, Origin, Served};
use crate::body::{self, BoxError, ProxyBody};

/// Whether stored or fetched parts could answer `request` at all: a GET with a range, or
/// any GET when slicing is on or some piece is stored. A cheap test for every request.
pub(super) fn parts_may_answer(cache: &Cache, request: &Request<ProxyBody>) -> bool {
    request.method() == Method::GET
        && (request.headers().contains_key(header::RANGE)
            || cache.settings.slice_size > 0
            || cache.parts.any_pieces())
}

/// Whether a GET for `key` is one to answer from parts (slices or a piece): no whole response is
/// stored (that answers ranges itself), and the request has one byte range and no
/// conditionals (which the whole-response path evaluates).
pub(super) fn wanted(cache: &Cache, key: &CacheKey, request: &HeaderMap) -> Option<Requested> {
    if !request.contains_key(header::RANGE) || has_conditionals(request) || cache.index.holds(key) {
        return None;
    }
    Requested::of(request)
}

/// Whether a GET without a range for `key` is to be completed from slices: slicing is on,
/// some slice of the object is stored (so it is known to be sliceable), no whole response
/// is, and the request has no conditionals.
pub(super) fn complete_from_slices(cache: &Cache, key: &CacheKey, request: &HeaderMap) -> bool {
    cache.settings.slice_size > 0
        && !request.contains_key(header::RANGE)
        && !cache.index.holds(key)
        && !has_conditionals(request)
        && cache.parts.peek(key, |parts| !parts.slices.is_empty()) == Some(true)
}

/// Whether a GET without a range for `key` may be completed from stored pieces: some are
/// stored (anywhere), none of it whole, and the request has no conditionals.
pub(super) fn may_complete_from_pieces(cache: &Cache, key: &CacheKey, request: &HeaderMap) -> bool {
    cache.parts.any_pieces()
        && !request.contains_key(header::RANGE)
        && !cache.index.holds(key)
        && !has_conditionals(request)
}

fn has_conditionals(request: &HeaderMap) -> bool {
    request.contains_key(header::IF_RANGE)
        || CONDITIONALS.iter().any(|name| request.contains_key(name))
}

/// Whether `response` is the part of a body a request for it asked for: for a slice, a 206
/// starting where the requested range starts; for a piece, a 206 of exactly its bytes.
pub(super) fn is_part_answer(
    part: Part,
    request: &HeaderMap,
    response: &Response<ProxyBody>,
) -> bool {
    if response.status() != StatusCode::PARTIAL_CONTENT {
        return false;
    }
    let Some((first, last, total)) = content_range(response.headers()) else {
        return false;
    };
    match part {
        // The whole slice asked for (or up to the end of the object), nothing shorter.
        Part::Slice(start, end) => {
            Requested::of(request) == Some(Requested::FromTo(start, end))
                && first == start
                && last == end.min(total.saturating_sub(1))
        }
        Part::Piece(start, end) => (first, last) == (start, end),
    }
}

/// One stored part of a body in a stitched answer: which, the bytes it holds, and the bytes
/// of it that are sent.
struct Span {
    part: Part,
    first: u64,
    last: u64,
    take: (u64, u64),
}

/// What identifies the representation a slice belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Representation {
    total: u64,
    validator: Option<HeaderValue>,
}

impl Representation {
    /// Parts may be combined only under a strong validator (RFC 9110 §15.3.7.3): a strong
    /// ETag (a bare `Last-Modified` or a weak ETag cannot tell two versions apart).
    fn combinable(&self) -> bool {
        self.validator.as_ref().is_some_and(|validator| {
            let text = validator.as_bytes();
            text.starts_with(b"\"") && !text.starts_with(b"W/")
        })
    }

    fn of(response: &Response<ProxyBody>, first_byte: u64) -> Option<Representation> {
        if response.status() != StatusCode::PARTIAL_CONTENT {
            return None;
        }
        let (start, _, total) = content_range(response.headers())?;
        let headers = response.headers();
        let validator = headers
            .get(header::ETAG)
            .or_else(|| headers.get(header::LAST_MODIFIED))
            .cloned();
        (start == first_byte).then_some(Representation { total, validator })
    }
}

impl Cache {
    /// A GET answered from stored parts of its body (or slices fetched for it), when that
    /// is how it is to be answered; otherwise the request back, for the usual lookup.
    pub(super) async fn serve_from_parts<O: Origin>(
        self: &Arc<Self>,
        key: &CacheKey,
        request: Request<ProxyBody>,
        origin: &Arc<O>,
    ) -> Result<Result<Served, Request<ProxyBody>>, O::Error> {
        if request.method() != Method::GET {
            return Ok(Err(request));
        }
        let headers = request.headers();
        let all = Requested::From(0);
        let (from_slices, wanted, whole) = match wanted(self, key, headers) {
            Some(range) => (self.settings.slice_size > 0, range, false),
            None if complete_from_slices(self, key, headers) => (true, all, true),
            None if may_complete_from_pieces(self, key, headers) => (false, all, true),
            None => return Ok(Err(request)),
        };
        if from_slices {
            let sliced = self.serve_sliced(key.clone(), request, wanted, whole, origin);
            return sliced.await.map(Ok);
        }
        let head = RequestHead::of(&request);
        match self
            .serve_from_pieces(key, head, wanted, whole, origin)
            .await?
        {
            Some(served) => Ok(Ok(served)),
            None => Ok(Err(request)),
        }
    }

    /// A GET with one byte range answered from slices (a 206), or with `whole` a GET of
    /// the whole object, completed from its slices (a 200).
    pub(super) async fn serve_sliced<O: Origin>(
        self: &Arc<Self>,
        key: CacheKey,
        request: Request<ProxyBody>,
        wanted: Requested,
        whole: bool,
        origin: &Arc<O>,
    ) -> Result<Served, O::Error> {
        let size = self.settings.slice_size;
        let mut head = RequestHead::of(&without_conditionals(request));
        head.headers.remove(header::RANGE);
        // The last n bytes: the length is known only from a slice, so the first comes first.
        let mut index = match wanted {
            Requested::FromTo(start, _) | Requested::From(start) => start / size,
            Requested::Last(_) => 0,
        };
        let mut served = self.slice(&key, index, &head, origin).await?;
        let Some(representation) = Representation::of(&served.response, index * size) else {
            // Not a slice (the origin ignored the range, or answered an error): as it came,
            // and the object is not taken for sliceable any more.
            self.forget_parts(&key);
            return Ok(served);
        };
        let (start, mut end) = match wanted.resolve(representation.total) {
            RangeAnswer::Partial { start, end } => (start, end),
            _ => return Ok(unsatisfiable(representation.total)),
        };
        if !representation.combinable() {
            if whole {
                // Completing it would mean combining: the whole object comes from the origin.
                self.forget_parts(&key);
                return Box::pin(self.look_up_and_serve(key, head.to_request(), origin)).await;
            }
            // Without a strong validator only one slice is sent: the bytes of the range it
            // holds (a 206 may hold less than was asked for; the client asks for the rest).
            end = end.min(slice_span(start / size, size).1);
        }
        if start / size != index {
            index = start / size;
            let unused =
                std::mem::replace(&mut served, self.slice(&key, index, &head, origin).await?);
            if unused.outcome != CacheOutcome::Hit {
                // Fetched for its length only: still stored for the next range that needs it.
                tokio::spawn(body::drain(unused.response.into_body()));
            }
            if Representation::of(&served.response, index * size).as_ref() != Some(&representation)
            {
                self.forget_parts(&key);
                return Ok(served);
            }
        }
        let (parts, first_body) = served.response.into_parts();
        let mut headers = parts.headers;
        if whole {
            headers.remove(header::CONTENT_RANGE);
        } else {
            headers.insert(
                header::CONTENT_RANGE,
                header_value(format!("bytes {start}-{end}/{}", representation.total)),
            );
        }
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start + 1));
        let first = window(
            first_body,
            start - index * size,
            (index * size).saturating_add(size).min(end + 1) - start,
            served.outcome,
        );
        // Lazily: the origin names the total, and a huge one must not become a huge list.
        let rest = (index + 1..=end / size).map(move |index| {
            let (first, last) = slice_span(index, size);
            Span {
                part: Part::Slice(first, last),
                first,
                last,
                take: (first, last.min(end)),
            }
        });
        let body = self.stitch(&key, head, first, rest, representation, origin);
        let mut response = Response::new(body);
        *response.status_mut() = if whole {
            StatusCode::OK
        } else {
            StatusCode::PARTIAL_CONTENT
        };
        *response.headers_mut() = headers;
        Ok(Served {
            response,
            outcome: served.outcome,
            upstream_status: served.upstream_status,
        })
    }

    /// Slice `index` of `key`, through the usual lookup: from storage, or fetched with a
    /// range request and stored as it streams.
    async fn slice<O: Origin>(
        self: &Arc<Self>,
        key: &CacheKey,
        index: u64,
        head: &RequestHead,
        origin: &Arc<O>,
    ) -> Result<Served, O::Error> {
        let span = slice_span(index, self.settings.slice_size);
        if !self.parts.note_slice(key, span) {
            // No room to remember it: fetched for this request, never stored.
            let response = origin.fetch(ranged(head, span)).await?;
            return Ok(from_origin(
                response,
                &CacheStatus::new(CacheOutcome::Bypass),
            ));
        }
        self.part(key, Part::Slice(span.0, span.1), span, head, origin)
            .await
    }

    /// `part` (bytes `first..=last`) of `key`'s body, through the usual lookup.
    async fn part<O: Origin>(
        self: &Arc<Self>,
        key: &CacheKey,
        part: Part,
        (first, last): (u64, u64),
        head: &RequestHead,
        origin: &Arc<O>,
    ) -> Result<Served, O::Error> {
        let request = ranged(head, (first, last));
        Box::pin(self.look_up_and_serve(key.part(part), request, origin)).await
    }

    /// The body made of `first` and then, one after the other, the wanted bytes of `rest`,
    /// each fetched (from storage or the origin) only when the one before has been sent.
    /// A part of another representation (the object changed meanwhile) ends the body with
    /// an error and forgets the URL's parts.
    fn stitch<O: Origin>(
        self: &Arc<Self>,
        key: &CacheKey,
        head: RequestHead,
        first: ProxyBody,
        rest: impl Iterator<Item = Span> + Send + 'static,
        representation: Representation,
        origin: &Arc<O>,
    ) -> ProxyBody {
        let (cache, origin, key) = (Arc::clone(self), Arc::clone(origin), key.clone());
        let rest = stream::iter(rest).then(move |span| {
            let (cache, origin, key, head) =
                (cache.clone(), origin.clone(), key.clone(), head.clone());
            let representation = representation.clone();
            async move {
                let served = cache
                    .part(&key, span.part, (span.first, span.last), &head, &origin)
                    .await
                    .map_err(|e| -> BoxError { e.to_string().into() })?;
                if Representation::of(&served.response, span.first) != Some(representation) {
                    cache.forget_parts(&key);
                    return Err(format!("{} changed between its parts", key.url()).into());
                }
                let (from, to) = span.take;
                let body = served.response.into_body();
                Ok(window(
                    body,
                    from - span.first,
                    to - from + 1,
                    served.outcome,
                ))
            }
        });
        let frames = stream::once(async move { Ok::<_, BoxError>(first) })
            .chain(rest)
            .flat_map(|part| match part {
                Ok(body) => BodyStream::new(body).left_stream(),
                Err(e) => stream::once(async move { Err(e) }).right_stream(),
            });
        body::stream(StreamBody::new(frames))
    }

    /// Forgets every stored part of `key`'s body (and fills of them in flight).
    pub(super) fn forget_parts(&self, key: &CacheKey) {
        let parts = self.parts.take(key);
        for (first, last) in parts.slices {
            self.index.remove(&key.part(Part::Slice(first, last)));
        }
        for piece in parts.pieces {
            self.index
                .remove(&key.part(Part::Piece(piece.first, piece.last)));
        }
    }

    /// A range of an object not stored whole, fetched as it is asked for: a 206 for a single
    /// range is stored as a piece (when the request has no conditionals and the URL was not
    /// invalidated while it was on its way); anything else passes through.
    pub(super) async fn fetch_piece<O: Origin>(
        self: &Arc<Self>,
        request: Request<ProxyBody>,
        admission: Admission,
        origin: &Arc<O>,
    ) -> Result<Served, O::Error> {
        let plain = !has_conditionals(request.headers());
        let response = origin.fetch(request).await?;
        let piece = (response.status() == StatusCode::PARTIAL_CONTENT)
            .then(|| Piece::of(response.headers()))
            .flatten();
        let unchanged = self.index.generation(&admission.key) == admission.generation;
        let (Some(piece), true, true) = (piece, plain, unchanged) else {
            return Ok(from_origin(
                response,
                &CacheStatus::new(CacheOutcome::Bypass),
            ));
        };
        let Piece { first, last, .. } = piece;
        if !self.parts.note_piece(&admission.key, piece) {
            return Ok(from_origin(
                response,
                &CacheStatus::new(CacheOutcome::Bypass),
            ));
        }
        let mut get = admission.head;
        // The piece is revalidated as the range it is.
        get.headers
            .insert(header::RANGE, header_value(format!("bytes={first}-{last}")));
        let piece_key = admission.key.part(Part::Piece(first, last));
        // Requests for this piece wait for its fill (those that waited on the URL's key
        // look again when that lock drops, and find the piece).
        let lock = self.collapser.lead_if_free(piece_key.hash());
        let piece_admission = self.admission(piece_key, get, admission.request_cc, lock);
        Ok(self.admit(
            piece_admission,
            response,
            CacheStatus::new(CacheOutcome::UriMiss),
        ))
    }

    /// A range (or with `whole`, the whole object) answered from stored pieces that hold
    /// it, if there are such (`None`: go on with the usual lookup, which fetches it).
    pub(super) async fn serve_from_pieces<O: Origin>(
        self: &Arc<Self>,
        key: &CacheKey,
        head: RequestHead,
        wanted: Requested,
        whole: bool,
        origin: &Arc<O>,
    ) -> Result<Option<Served>, O::Error> {
        let Some((pieces, start, end)) = self.parts.chain(key, wanted) else {
            return Ok(None);
        };
        let first = pieces[0];
        let span = (first.first, first.last);
        let piece = Part::Piece(first.first, first.last);
        let served = self.part(key, piece, span, &head, origin).await?;
        let representation = Representation::of(&served.response, first.first)
            .filter(|representation| representation.total == first.total);
        let Some(representation) = representation else {
            // The origin has something else now; whatever it sent is the answer.
            return Ok(Some(served));
        };
        if pieces.len() > 1 && !representation.combinable() {
            // Combining needs a strong validator: this one piece is no answer, the origin is.
            return Ok(None);
        }
        let (mut parts, body) = served.response.into_parts();
        if whole {
            parts.headers.remove(header::CONTENT_RANGE);
            parts.status = StatusCode::OK;
        } else {
            let range = format!("bytes {start}-{end}/{}", first.total);
            parts
                .headers
                .insert(header::CONTENT_RANGE, header_value(range));
        }
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(end - start + 1));
        let first_end = first.last.min(end);
        let body = window(
            body,
            start - first.first,
            first_end - start + 1,
            served.outcome,
        );
        let mut next = first_end + 1;
        let rest: Vec<Span> = pieces[1..]
            .iter()
            .map(|piece| {
                let take = (next, piece.last.min(end));
                next = take.1 + 1;
                Span {
                    part: Part::Piece(piece.first, piece.last),
                    first: piece.first,
                    last: piece.last,
                    take,
                }
            })
            .collect();
        let body = self.stitch(key, head, body, rest.into_iter(), representation, origin);
        Ok(Some(Served {
            response: Response::from_parts(parts, body),
            outcome: served.outcome,
            upstream_status: served.upstream_status,
        }))
    }
}

/// A GET with `head`'s URL and fields asking for bytes `first..=last`.
fn ranged(head: &RequestHead, (first, last): (u64, u64)) -> Request<ProxyBody> {
    let mut request = head.to_request();
    *request.method_mut() = Method::GET;
    let range = header_value(format!("bytes={first}-{last}"));
    request.headers_mut().insert(header::RANGE, range);
    request
}

/// The bytes of slice `index` of `size` bytes (saturating: an index from a client's range
/// near the end of `u64` names an empty slice, which no origin answers with a 206).
fn slice_span(index: u64, size: u64) -> (u64, u64) {
    let first = index.saturating_mul(size);
    (first, first.saturating_add(size - 1))
}

/// 416 for a range beyond a body of `total` bytes.
fn unsatisfiable(total: u64) -> Served {
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_RANGE,
        header_value(format!("bytes */{total}")),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    from_storage(response, &CacheStatus::new(CacheOutcome::Hit))
}

/// Bytes `skip..skip + take` of a slice's body. A slice fetched from the origin is read to
/// its end in the background once the window is done, so that it is stored whole.
fn window(body: ProxyBody, skip: u64, take: u64, outcome: CacheOutcome) -> ProxyBody {
    let drain_rest = outcome != CacheOutcome::Hit && outcome != CacheOutcome::Stale;
    let state = (Some(body), skip, take);
    let frames = stream::unfold(state, move |(body, mut skip, mut take)| async move {
        let mut body = body?;
        loop {
            let frame = match http_body_util::BodyExt::frame(&mut body).await {
                None => return Some((Err("slice ended early".into()), (None, 0, 0))),
                Some(Err(e)) => return Some((Err(e), (None, 0, 0))),
                Some(Ok(frame)) => frame,
            };
            let Ok(mut data): Result<Bytes, _> = frame.into_data() else {
                continue;
            };
            let dropped = skip.min(data.len() as u64);
            skip -= dropped;
            let _ = data.split_to(dropped as usize);
            let kept = take.min(data.len() as u64);
            data.truncate(kept as usize);
            take -= kept;
            if take == 0 {
                // Now, not on a later poll: with the length sent, hyper may not poll again.
                if drain_rest {
                    tokio::spawn(body::drain(body));
                }
                return Some((Ok(hyper::body::Frame::data(data)), (None, 0, 0)));
            }
            if !data.is_empty() {
                return Some((Ok(hyper::body::Frame::data(data)), (Some(body), skip, take)));
            }
        }
    });
    body::stream(StreamBody::new(frames))
}
