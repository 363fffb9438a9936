//! What the index keeps in memory for each stored response: a `Slot` (which row and body it
//! is, and what it weighs on disk), the variants of one URL (`Slots`), and the `slots` table
//! they are loaded from at start-up.
//!
//! A slot is 16 bytes and a URL with one variant needs no allocation of its own, so ten
//! million entries fit in about a gigabyte less than full heads would take. Everything else
//! (URL, status, headers, freshness, checksum) stays in the row in `entries` and is read
//! through `heads.rs` when a lookup needs it. The `slots` table repeats, per row, only what
//! start-up needs to rebuild the map, in fixed-width values, so start-up never decodes a head.
//!
//! Owns the slot types, the URL hash the map is keyed by, and the `slots` table's layout; not
//! what a lookup does with them.

use std::sync::Arc;

use redb::TableDefinition;
use siphasher::sip128::{Hasher128, SipHasher13};

use crate::cache::entry::StoredResponse;
use crate::cache::key::CacheKey;
use crate::cache::storage::BodyId;

/// (URL hash, body id) → (body length, weight, whether the URL is a part of a body). Keyed by
/// the hash first, so the variants of one URL are neighbours and start-up reads each URL's
/// list in one go.
pub(super) const SLOTS: TableDefinition<'static, (u128, u64), (u64, u64, bool)> =
    TableDefinition::new("slots");

/// Body id → URL hash, for the entries that are parts of bodies: they are loaded before hoard
/// serves (`slice.rs` registers them), the rest in the background.
pub(super) const PARTS: TableDefinition<'static, u64, u128> = TableDefinition::new("parts");

/// (Hash of a cache group and its origin, body id) → nothing: the responses in each group
/// (`groups.rs`), so a group is purged by reading its rows, not every head. Written with the
/// entry's row and removed with it.
pub(super) const GROUPS: TableDefinition<'static, (u128, u64), ()> = TableDefinition::new("groups");

/// A row of `SLOTS`.
pub(super) type SlotRow = ((u128, u64), (u64, u64, bool));

/// One stored response, as the map holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Slot {
    /// The body's id, which is also the key of the response's row.
    pub body: BodyId,
    /// What the response occupies on disk (`StoredResponse::weight`).
    pub weight: u64,
}

impl Slot {
    pub(super) fn of(entry: &StoredResponse) -> Slot {
        Slot {
            body: entry.body,
            weight: entry.weight(),
        }
    }
}

/// The variants stored for one URL, oldest first. One variant (the common case) is held
/// inline; replaced as a whole on change, so readers never lock.
#[derive(Debug, Clone)]
pub(super) enum Slots {
    One(Slot),
    Many(Arc<[Slot]>),
}

impl Slots {
    /// `None` for no variants at all.
    pub(super) fn from_vec(slots: Vec<Slot>) -> Option<Slots> {
        match slots.as_slice() {
            [] => None,
            [one] => Some(Slots::One(*one)),
            _ => Some(Slots::Many(slots.into())),
        }
    }

    pub(super) fn as_slice(&self) -> &[Slot] {
        match self {
            Slots::One(slot) => std::slice::from_ref(slot),
            Slots::Many(slots) => slots,
        }
    }

    pub(super) fn names(&self, body: BodyId) -> bool {
        self.as_slice().iter().any(|slot| slot.body == body)
    }
}

/// The map's key for a URL: 128 bits of SipHash-1-3 under keys kept in the database, so the
/// `slots` table's hashes stay valid across restarts while no one outside can aim two URLs at
/// one slot. (`CacheKey::hash` uses keys of this process and is never stored.) A collision
/// would cost a miss, never a wrong answer: lookups compare the URL of the head they read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct UrlHasher {
    keys: (u64, u64),
}

impl UrlHasher {
    pub(super) fn with_keys(keys: (u64, u64)) -> UrlHasher {
        UrlHasher { keys }
    }

    pub(super) fn hash(&self, key: &CacheKey) -> u128 {
        self.hash_text(key.url())
    }

    fn hash_text(&self, text: &str) -> u128 {
        let mut hasher = SipHasher13::new_with_keys(self.keys.0, self.keys.1);
        std::hash::Hasher::write(&mut hasher, text.as_bytes());
        hasher.finish128().as_u128()
    }

    /// The key of cache group `group` of `origin` in `GROUPS` (a NUL, which no URL holds,
    /// keeps it apart from every URL's hash).
    pub(super) fn group(&self, origin: &str, group: &str) -> u128 {
        self.hash_text(&format!("{origin}\0{group}"))
    }

    /// `entry`'s rows in `GROUPS`.
    pub(super) fn group_rows(&self, entry: &StoredResponse) -> Vec<(u128, u64)> {
        let origin = crate::cache::groups::origin_of(entry.key.url());
        crate::cache::groups::groups_of(&entry.headers)
            .map(|group| (self.group(origin, &group), entry.body))
            .collect()
    }

    /// `entry`'s row in the `slots` table.
    pub(super) fn row(&self, entry: &StoredResponse) -> SlotRow {
        (
            (self.hash(&entry.key), entry.body),
            (entry.body_len, entry.weight(), entry.key.is_part()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_variant_is_inline_and_a_slot_is_sixteen_bytes() {
        let slot = Slot { body: 1, weight: 2 };
        assert!(matches!(Slots::from_vec(vec![slot]), Some(Slots::One(_))));
        assert!(Slots::from_vec(Vec::new()).is_none());
        let many = Slots::from_vec(vec![slot, Slot { body: 3, weight: 4 }]).unwrap();
        assert!(many.names(3) && !many.names(2));
        assert_eq!(std::mem::size_of::<Slot>(), 16);
        assert_eq!(std::mem::size_of::<Slots>(), 24);
    }

    #[test]
    fn the_url_hash_depends_on_the_keys_only() {
        let key = CacheKey::from_url("http://example.com/a".into());
        let a = UrlHasher::with_keys((1, 2));
        assert_eq!(a.hash(&key), UrlHasher::with_keys((1, 2)).hash(&key));
        assert_ne!(a.hash(&key), UrlHasher::with_keys((1, 3)).hash(&key));
        let other = CacheKey::from_url("http://example.com/b".into());
        assert_ne!(a.hash(&key), a.hash(&other));
    }
}
