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

/// Pieces kept per URL; beyond it no more are stored.
const MAX_PIECES: usize = 32;

/// Parts registered in all: beyond it parts are fetched but not stored, so that clients
/// asking for ever new ranges cannot grow the registry without bound (it is given back as
/// URLs are invalidated or purged).
const MAX_PARTS: u64 = 1 << 20;

/// What parts of each URL's body may be stored (by the URL key's hash), so that an
/// invalidation or purge of the URL reaches all of them, and a range can find its piece.
#[derive(Default)]
pub(super) struct Parts {
    urls: Mutex<HashMap<u128, UrlParts>>,
    /// Parts registered, slices and pieces.
    registered: AtomicU64,
    /// Whether a piece was ever registered (a cheap test for whole GETs).
    pieces_seen: std::sync::atomic::AtomicBool,
}

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
    /// The parts the index holds at start-up, and those there is no room to remember
    /// (which the caller must forget, or an invalidation could not reach them).
    pub(super) fn of_stored(
        entries: Vec<Arc<StoredResponse>>,
    ) -> (Parts, Vec<Arc<StoredResponse>>) {
        let parts = Parts::default();
        let mut unregistered = Vec::new();
        for entry in entries {
            let noted = match entry.key.part_of() {
                Some((key, Part::Slice(first, last))) => parts.note_slice(&key, (first, last)),
                Some((key, Part::Piece(..))) => {
                    Piece::of(&entry.headers).is_some_and(|piece| parts.note_piece(&key, piece))
                }
                None => true,
            };
            if !noted {
                unregistered.push(entry);
            }
        }
        (parts, unregistered)
    }

    /// Registers a part of `key` with `add`, told whether there is room for a new one; it
    /// answers `Some(true)` for a part it added, `Some(false)` for one already there, `None`
    /// for one refused. `false` when the part must not be stored.
    fn register(
        &self,
        key: &CacheKey,
        add: impl FnOnce(&mut UrlParts, bool) -> Option<bool>,
    ) -> bool {
        let mut all = self.urls.lock().unwrap_or_else(|p| p.into_inner());
        let room = self.registered.load(Ordering::Relaxed) < MAX_PARTS;
        if !room && !all.contains_key(&key.hash()) {
            return false;
        }
        let parts = all.entry(key.hash()).or_default();
        match add(parts, room) {
            Some(true) => {
                self.registered.fetch_add(1, Ordering::Relaxed);
                true
            }
            Some(false) => true,
            None => false,
        }
    }

    /// Reads what may be stored of `key` (adding nothing for a URL with no parts).
    pub(super) fn peek<T>(&self, key: &CacheKey, f: impl FnOnce(&UrlParts) -> T) -> Option<T> {
        let all = self.urls.lock().unwrap_or_else(|p| p.into_inner());
        all.get(&key.hash()).map(f)
    }

    /// The slice of `key` holding bytes `span` may be stored from now on; `false`: it must
    /// not be (the registry is full).
    pub(super) fn note_slice(&self, key: &CacheKey, span: (u64, u64)) -> bool {
        self.register(key, |parts, room| {
            if parts.slices.contains(&span) {
                Some(false)
            } else if room {
                Some(parts.slices.insert(span))
            } else {
                None
            }
        })
    }

    /// `piece` of `key` may be stored from now on; `false`: it must not be (the registry or
    /// the URL's share of it is full).
    pub(super) fn note_piece(&self, key: &CacheKey, piece: Piece) -> bool {
        let noted = self.register(key, |parts, room| {
            if parts.pieces.contains(&piece) {
                return Some(false);
            }
            if !room || parts.pieces.len() >= MAX_PIECES {
                return None;
            }
            parts.pieces.push(piece);
            Some(true)
        });
        if noted {
            self.pieces_seen.store(true, Ordering::Relaxed);
        }
        noted
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
        self.pieces_seen.load(Ordering::Relaxed)
    }

    /// Takes what may be stored of `key`, which is about to be forgotten.
    pub(super) fn take(&self, key: &CacheKey) -> UrlParts {
        let mut all = self.urls.lock().unwrap_or_else(|p| p.into_inner());
        let parts = all.remove(&key.hash()).unwrap_or_default();
        let count = (parts.slices.len() + parts.pieces.len()) as u64;
        self.registered.fetch_sub(count, Ordering::Relaxed);
        parts
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_is_bounded_and_gives_room_back_when_a_url_is_forgotten() {
        let parts = Parts::default();
        let full = CacheKey::from_url("http://a.example/full".into());
        for index in 0..MAX_PARTS {
            assert!(parts.note_slice(&full, (index, index)));
        }
        let other = CacheKey::from_url("http://b.example/other".into());
        assert!(!parts.note_slice(&full, (MAX_PARTS, MAX_PARTS)), "full");
        assert!(
            parts.note_slice(&full, (0, 0)),
            "a known part is still known"
        );
        let piece = Piece {
            first: 0,
            last: 9,
            total: 10,
        };
        assert!(!parts.note_piece(&other, piece));
        assert_eq!(parts.take(&full).slices.len() as u64, MAX_PARTS);
        assert!(parts.note_piece(&other, piece), "room again");
        for first in 1..MAX_PIECES as u64 {
            let piece = Piece { first, ..piece };
            assert!(parts.note_piece(&other, piece));
        }
        let one_too_many = Piece {
            first: MAX_PIECES as u64,
            ..piece
        };
        assert!(!parts.note_piece(&other, one_too_many), "32 pieces per URL");
    }
}
