#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 60) each with cargo-fuzz (libFuzzer) and reports
# executions and findings. Crashes land in fuzz/artifacts/TARGET/; turn each into a regression
# test next to the code it broke. Needs `cargo install cargo-fuzz`; cargo-fuzz wants nightly
# flags, which RUSTC_BOOTSTRAP=1 unlocks on the stable toolchain.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${SECONDS_PER_TARGET:-60}"
export RUSTC_BOOTSTRAP=1
for target in ${TARGETS:-cache_control entry_decode gateway_path config_file http1_request}; do
    echo "== $target ($seconds s)"
    cargo fuzz run "$target" -- -max_total_time="$seconds" -print_final_stats=1 2>&1 \
        | grep -E "stat::number_of_executed_units|stat::peak_rss_mb|SUMMARY|ERROR|Done" || true
done
