#!/usr/bin/env bash
# Soak test: holds $CONNS (5000) concurrent keep-alive connections through hoard for $DURATION
# (3m) with a mixed hit/miss load against the shared nginx origin on loopback, and reports
# errors (must be 0), RSS over time (must stay bounded and flat) and open file descriptors
# (must return to the baseline afterwards). Run time: DURATION plus about a minute.
# Needs wrk and nginx (../shared/bench/setup.sh installs them).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
harness="${HARNESS:-$repo/../shared/bench}"
conns="${CONNS:-5000}"
duration="${DURATION:-3m}"
port="${PORT:-18110}"
work="$(mktemp -d)"
trap 'kill "${hoard_pid:-}" "${sampler:-}" 2>/dev/null || true; bash "$harness/origin.sh" stop >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

command -v wrk >/dev/null || bash "$harness/setup.sh"
cargo build --release --manifest-path "$repo/Cargo.toml"
bash "$harness/origin.sh" start >/dev/null
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
"$repo/target/release/hoard" "$port" --cache-dir "$work/cache" --access-log none --max-connections 20000 &
hoard_pid=$!
sleep 1

fds() { ls "/proc/$hoard_pid/fd" | wc -l; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$hoard_pid/status"; }
baseline_fds=$(fds)
echo "baseline: rss $(rss_kib) KiB, fds $baseline_fds"

# RSS every 10 s during the soak.
( while sleep 10; do echo "rss $(rss_kib) KiB, fds $(fds)"; done ) &
sampler=$!

SOAK_ORIGIN=127.0.0.1:18080 wrk -t2 -c"$conns" -d"$duration" --timeout 10s \
  -s "$here/soak.lua" "http://127.0.0.1:$port/" | tee "$work/wrk.txt"
kill "$sampler" 2>/dev/null || true
sleep 5
echo "after: rss $(rss_kib) KiB, peak $(awk '/VmHWM/ {print $2}' "/proc/$hoard_pid/status") KiB, fds $(fds) (baseline $baseline_fds)"
grep SOAK "$work/wrk.txt"
