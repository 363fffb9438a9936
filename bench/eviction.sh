#!/usr/bin/env bash
# Eviction quality on a Zipf workload (issue 17): hoard's index policy beside a plain LRU and
# Belady's farthest-next-use, object and byte hit ratios. Deterministic (fixed seed); takes
# about a minute in release.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release --quiet --lib eviction_quality_on_a_zipf_workload -- --ignored --nocapture
