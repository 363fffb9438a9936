# Sourced by the bench scripts that run hoard against the shared origin: sets `here`, `repo`,
# `harness`, `work` (a temporary directory) and `hoard` (a fresh release build), installs wrk
# if it is missing and starts the origin. On exit hoard (`$pid`) and the origin are stopped
# and `work` removed.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
harness="${HARNESS:-$repo/../shared/bench}"
work="$(mktemp -d)"
trap 'kill "${pid:-}" 2>/dev/null || true; bash "$harness/origin.sh" stop >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

command -v wrk >/dev/null || bash "$harness/setup.sh"
cargo build --release --manifest-path "$repo/Cargo.toml"
hoard="$repo/target/release/hoard"
bash "$harness/origin.sh" start >/dev/null
