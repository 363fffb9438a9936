//! Which parts of bodies (slices and pieces, see `slice.rs`) each URL may have stored: so
//! that an invalidation or purge of a URL reaches every part of it, and a range finds the
//! pieces that hold it. In memory, rebuilt from the index at start-up.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use http::header::{self, HeaderMap};

use super::key::Part;
use super::range::{RangeAnswer, Requested};
use super::{CacheKey, StoredResponse};

/// Pieces kept per URL; beyond it the oldest is forgotten.
const MAX_PIECES: usize = 32;

/// What parts of each URL's body may be stored (by the URL key's hash), so that an
/// invalidation or purge of the URL reaches all of them, and a range can find its piece.
#[derive(Default)]
pub(super) struct Parts(Mutex<HashMap<u128, UrlParts>>, AtomicU64);

/// A piece as its 206 had it: bytes `first..=last` of `total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Piece {
    pub(super) first: u64,
    pub(super) last: u64,
    pub(super) total: u64,
}

impl Piece {
    pub(super) fn of(headers: &HeaderMap) -> Option<Piece> {
        let (first, last, total) = content_range(headers)?;
        Some(Piece { first, last, total })
    }
}

#[derive(Default)]
pub(super) struct UrlParts {
    /// Slices (their byte spans) that may be stored.
    pub(super) slices: std::collections::BTreeSet<(u64, u64)>,
    /// Pieces stored as they came.
    pub(super) pieces: Vec<Piece>,
}

impl Parts {
    /// The parts the index holds at start-up.
    pub(super) fn of_stored(entries: Vec<Arc<StoredResponse>>) -> Parts {
        let parts = Parts::default();
        for entry in entries {
            match entry.key.part_of() {
                Some((key, Part::Slice(first, last))) => parts.note_slice(&key, (first, last)),
                Some((key, Part::Piece(..))) => {
                    if let Some(piece) = Piece::of(&entry.headers) {
                        parts.note_piece(&key, piece);
                    }
                }
                None => {}
            }
        }
        parts
    }

    fn with<T>(&self, key: &CacheKey, f: impl FnOnce(&mut UrlParts) -> T) -> T {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(all.entry(key.hash()).or_default())
    }

    /// Reads what may be stored of `key` (adding nothing for a URL with no parts).
    pub(super) fn peek<T>(&self, key: &CacheKey, f: impl FnOnce(&UrlParts) -> T) -> Option<T> {
        let all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        all.get(&key.hash()).map(f)
    }

    /// The slice of `key` holding bytes `span` may be stored from now on.
    pub(super) fn note_slice(&self, key: &CacheKey, span: (u64, u64)) {
        self.with(key, |parts| parts.slices.insert(span));
    }

    /// `piece` of `key` may be stored from now on.
    pub(super) fn note_piece(&self, key: &CacheKey, piece: Piece) {
        self.with(key, |parts| {
            if !parts.pieces.contains(&piece) {
                if parts.pieces.len() == MAX_PIECES {
                    parts.pieces.remove(0);
                }
                parts.pieces.push(piece);
            }
        });
        self.1.fetch_add(1, Ordering::Relaxed);
    }

    /// Stored pieces of `key` that together hold all of `wanted` (of one total length), in
    /// order, and the bytes wanted.
    pub(super) fn chain(
        &self,
        key: &CacheKey,
        wanted: Requested,
    ) -> Option<(Vec<Piece>, u64, u64)> {
        self.peek(key, |parts| {
            let mut pieces = parts.pieces.clone();
            pieces.sort_by_key(|piece| (piece.total, piece.first));
            pieces
                .chunk_by(|a, b| a.total == b.total)
                .find_map(|same_total| {
                    let RangeAnswer::Partial { start, end } = wanted.resolve(same_total[0].total)
                    else {
                        return None;
                    };
                    // Greedy: from the next byte needed, the piece that reaches furthest.
                    let (mut chain, mut next) = (Vec::new(), start);
                    while next <= end {
                        let piece = same_total
                            .iter()
                            .filter(|piece| piece.first <= next && piece.last >= next)
                            .max_by_key(|piece| piece.last)?;
                        chain.push(*piece);
                        next = piece.last + 1;
                    }
                    Some((chain, start, end))
                })
        })
        .flatten()
    }

    /// Whether any piece is stored at all (a cheap test before a whole GET looks for some).
    pub(super) fn any_pieces(&self) -> bool {
        self.1.load(Ordering::Relaxed) > 0
    }

    /// Takes what may be stored of `key`, which is about to be forgotten.
    pub(super) fn take(&self, key: &CacheKey) -> UrlParts {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        all.remove(&key.hash()).unwrap_or_default()
    }
}

/// `Content-Range: bytes a-b/total` as (a, b, total).
pub(super) fn content_range(headers: &HeaderMap) -> Option<(u64, u64, u64)> {
    let text = headers.get(header::CONTENT_RANGE)?.to_str().ok()?;
    let (unit, rest) = text.trim().split_once(' ')?;
    let (span, total) = rest.split_once('/')?;
    let (start, end) = span.split_once('-')?;
    let number = |s: &str| s.trim().parse::<u64>().ok();
    let (start, end, total) = (number(start)?, number(end)?, number(total)?);
    (unit.eq_ignore_ascii_case("bytes") && start <= end && end < total)
        .then_some((start, end, total))
}
