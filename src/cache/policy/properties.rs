//! Property tests of age and freshness arithmetic.

use super::*;
use proptest::prelude::*;

proptest! {
    /// Age never decreases with time, never falls below the initial age, and a response
    /// stays fresh exactly while its age is under its lifetime (no request directives).
    #[test]
    fn age_and_freshness_move_with_time(
        initial_age in 0u64..1_000_000,
        lifetime in 0u64..1_000_000,
        response_time in 0u64..2_000_000_000,
        elapsed in 0u64..1_000_000,
        later in 0u64..1_000_000,
    ) {
        let freshness = Freshness {
            response_time,
            initial_age,
            lifetime,
            must_revalidate: true,
            no_cache: false,
            stale_while_revalidate: None,
            stale_if_error: None,
        };
        let now = response_time + elapsed;
        let age = freshness.age(now);
        prop_assert!(age >= initial_age);
        prop_assert!(freshness.age(now + later) >= age);
        let verdict = freshness.verdict(&CacheControl::default(), now);
        prop_assert_eq!(verdict == Verdict::Fresh, age < lifetime);
        if verdict != Verdict::Fresh {
            prop_assert_eq!(verdict, Verdict::Validate, "must-revalidate never serves stale");
        }
    }

    /// Request directives only ever narrow what a plain request would accept, except
    /// max-stale, which may widen it.
    #[test]
    fn request_directives_never_make_a_stale_response_fresh(
        lifetime in 0u64..10_000,
        elapsed in 0u64..20_000,
        max_age in 0u64..20_000,
        min_fresh in 0u64..20_000,
    ) {
        let freshness = Freshness {
            response_time: 1_000_000,
            initial_age: 0,
            lifetime,
            must_revalidate: false,
            no_cache: false,
            stale_while_revalidate: None,
            stale_if_error: None,
        };
        let now = 1_000_000 + elapsed;
        let plain = freshness.verdict(&CacheControl::default(), now);
        let narrowed = CacheControl { max_age: Some(max_age), min_fresh: Some(min_fresh), ..CacheControl::default() };
        if plain != Verdict::Fresh {
            prop_assert_ne!(freshness.verdict(&narrowed, now), Verdict::Fresh);
        }
    }
}
