//! A config file with any content must be rejected with a message, never crash hoard.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("hoard-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let file = dir.join("hoard.toml");
    if std::fs::write(&file, text).is_err() {
        return;
    }
    let _ = hoard::config::load([
        "hoard",
        "--config",
        file.to_str().unwrap_or(""),
        "--cache-dir",
        "/nonexistent",
    ]);
});
