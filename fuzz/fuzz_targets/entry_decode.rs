//! Index records come from disk: decoding any bytes must fail cleanly, never panic.
#![no_main]

use hoard::cache::StoredResponse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(entry) = StoredResponse::decode(data) {
        // What decodes must encode again to something that decodes the same way.
        let again = StoredResponse::decode(&entry.encode()).expect("re-encoded record decodes");
        assert_eq!(again.body, entry.body);
        assert_eq!(again.headers, entry.headers);
    }
});
