#!/usr/bin/env bash
# Everything CI checks, in CI's order: formatting, lints, then the README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked
