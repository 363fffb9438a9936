//! Rendezvous (highest-random-weight) hashing, as Squid's CARP does it: every member scores
//! every routing key, and the highest score owns the key. Adding or removing one of N
//! members moves only the keys that member wins or held, about 1/N of them, and every node
//! that holds the same member list computes the same owner with no coordination.
//!
//! The scores must be the same on every node and in every release of a fleet: they use
//! BLAKE3 (for the key and for a member's name, once) and the SplitMix64 finaliser to mix
//! the two, never a process-seeded hasher.

/// A member's routing identity: the hash of its canonical URL, worked out once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberHash(u64);

impl MemberHash {
    /// `name`: the member's canonical URL (`http://10.0.0.5:8080`), the same text on every node.
    pub fn of(name: &str) -> MemberHash {
        MemberHash(first_u64(blake3::hash(name.as_bytes()).as_bytes()))
    }
}

/// A routing key's hash: scheme, host, path and query only (`routing_key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyHash(u64);

impl KeyHash {
    pub fn of(routing_key: &str) -> KeyHash {
        KeyHash(first_u64(blake3::hash(routing_key.as_bytes()).as_bytes()))
    }
}

/// What member `member` scores for `key`: higher wins.
pub fn score(member: MemberHash, key: KeyHash) -> u64 {
    splitmix64(member.0 ^ key.0)
}

/// The members' indexes ordered by their score for `key`, best first: the owner, then the
/// candidate that takes the key when the owner is down, and so on.
pub fn ranked(members: &[MemberHash], key: KeyHash) -> Vec<usize> {
    let mut order: Vec<(u64, usize)> = members
        .iter()
        .enumerate()
        .map(|(i, member)| (score(*member, key), i))
        .collect();
    // Ties (never seen in practice) go to the lower index on every node alike.
    order.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    order.into_iter().map(|(_, i)| i).collect()
}

/// The index of the member that owns `key`; `None` for no members.
pub fn owner(members: &[MemberHash], key: KeyHash) -> Option<usize> {
    best(members, key, |_| true)
}

/// The best-scoring member for `key` among those `eligible` says may take it (the owner
/// when all may): what `ranked` would list first, without sorting or allocating.
pub fn best(
    members: &[MemberHash],
    key: KeyHash,
    eligible: impl Fn(usize) -> bool,
) -> Option<usize> {
    members
        .iter()
        .enumerate()
        .filter(|(i, _)| eligible(*i))
        .max_by(|(i, a), (j, b)| score(**a, key).cmp(&score(**b, key)).then(j.cmp(i)))
        .map(|(i, _)| i)
}

/// The part of a request URL that picks its owner: scheme, host and port, path and query
/// (the cache's primary key without any part marker). Never a request header, so every
/// `Vary` variant of a URL lives on the same owner.
pub fn routing_key(cache_url: &str) -> KeyHash {
    KeyHash::of(cache_url)
}

fn first_u64(bytes: &[u8; 32]) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(first)
}

/// The SplitMix64 finaliser: a bijection whose output bits each depend on every input bit.
fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: usize) -> Vec<MemberHash> {
        (0..n)
            .map(|i| MemberHash::of(&format!("http://10.0.0.{i}:8080")))
            .collect()
    }

    fn keys(n: usize) -> Vec<KeyHash> {
        (0..n)
            .map(|i| routing_key(&format!("http://site.example/object/{i}")))
            .collect()
    }

    #[test]
    fn owners_spread_evenly() {
        let fleet = members(4);
        let mut counts = [0usize; 4];
        for key in keys(40_000) {
            counts[owner(&fleet, key).unwrap()] += 1;
        }
        for count in counts {
            assert!((9_000..11_000).contains(&count), "{counts:?}");
        }
    }

    #[test]
    fn adding_a_member_moves_only_the_keys_it_wins() {
        let (three, four) = (members(3), members(4));
        let all = keys(30_000);
        let mut moved = 0;
        for key in &all {
            let before = owner(&three, *key).unwrap();
            let after = owner(&four, *key).unwrap();
            if before != after {
                assert_eq!(after, 3, "a key moved between two old members");
                moved += 1;
            }
        }
        // About a quarter.
        assert!((6_900..8_100).contains(&moved), "{moved}");
    }

    #[test]
    fn removing_a_member_moves_only_its_keys_to_their_next_candidate() {
        let fleet = members(3);
        for key in keys(3_000) {
            let order = ranked(&fleet, key);
            assert_eq!(Some(order[0]), owner(&fleet, key));
            let without: Vec<MemberHash> = fleet
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != order[0])
                .map(|(_, m)| *m)
                .collect();
            let next = owner(&without, key).unwrap();
            let next = if next >= order[0] { next + 1 } else { next };
            assert_eq!(next, order[1]);
        }
    }

    #[test]
    fn scores_are_fixed_across_releases() {
        // Nodes of different releases in one fleet must agree on every owner: these values
        // may never change.
        let key = routing_key("http://site.example/");
        assert_eq!(
            score(MemberHash::of("http://10.0.0.1:8080"), key),
            8_372_173_250_951_237_611
        );
        assert_eq!(
            ranked(&members(5), routing_key("http://site.example/a?b")),
            [4, 1, 3, 2, 0]
        );
        assert_eq!(owner(&[], key), None);
    }
}
