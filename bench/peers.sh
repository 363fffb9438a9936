#!/usr/bin/env bash
# Runs hoard beside Squid, Traffic Server, Varnish, nginx proxy_cache and tinyproxy through the
# shared harness (../shared/bench, see its README) and writes the table to bench/RESULTS.md
# with the date, the machine and the commit. Peers that cannot be installed are reported by the
# harness as missing. Also runs the harness's 64 MiB streaming check and a second pass with a
# memory tier too small for the 256 KiB and 4 MiB objects (disk-tier hits). Takes about 10
# minutes with the default settings; DURATION, WARMUP, TESTS,
# PEERS... are passed through to the harness.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
harness="${HARNESS:-$repo/../shared/bench}"
port_forward="${PORT_FORWARD:-18100}"
port_reverse="${PORT_REVERSE:-18101}"
work="$(mktemp -d)"
trap 'kill "${fwd:-}" "${rev:-}" 2>/dev/null || true; bash "$harness/anchors.sh" stop >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

command -v wrk >/dev/null || bash "$harness/setup.sh"
cargo build --release --manifest-path "$repo/Cargo.toml"
hoard="$repo/target/release/hoard"

bash "$harness/anchors.sh" start
"$hoard" "$port_forward" --cache-dir "$work/forward" --access-log none &
fwd=$!
"$hoard" "$port_reverse" --cache-dir "$work/reverse" --access-log none --upstream http://127.0.0.1:18080 &
rev=$!
sleep 1

OURS_FORWARD="127.0.0.1:$port_forward" OURS_REVERSE="127.0.0.1:$port_reverse" OURS_PID="$fwd" \
  DURATION="${DURATION:-5}" WARMUP="${WARMUP:-2}" bash "$harness/bench.sh" > "$work/table.md"

# 64 MiB through each proxy, cold and warm: time to first byte and RSS growth.
OURS_FORWARD="127.0.0.1:$port_forward" OURS_PID="$fwd" STREAM_OUT="$work/stream" \
  bash "$harness/stream.sh" > "$work/stream.md" 2>&1 || echo "(stream.sh failed)" >> "$work/stream.md"

# The disk tier: the forward hoard again with a memory tier too small for 256 KiB and 4 MiB
# objects (an object may take an eighth of it), against Traffic Server (the best peer there) and
# nginx proxy_cache (whose cache is on disk too, sent with sendfile).
kill "$fwd"; wait "$fwd" 2>/dev/null || true
"$hoard" "$port_forward" --cache-dir "$work/forward-disk" --access-log none --cache-memory 1MiB &
fwd=$!
sleep 1
OURS_FORWARD="127.0.0.1:$port_forward" OURS_PID="$fwd" TESTS="hit256k hit4m" CLOSE_TESTS="" \
  PEERS="trafficserver nginx-cache" DURATION="${DURATION:-5}" WARMUP="${WARMUP:-2}" \
  bash "$harness/bench.sh" > "$work/disk.md"

{
  echo "# hoard beside its peers"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- commit: $(git -C "$repo" rev-parse --short HEAD)"
  echo "- machine: $(uname -srm), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
  echo "- rounds: ${ROUNDS:-1} (each point the median of that many interleaved rounds)"
  echo "- hoard: forward on :$port_forward and reverse on :$port_reverse, default settings, access log off (as every peer)"
  echo
  grep -v '^PERF_RESULT' "$work/table.md"
  echo
  echo "## 64 MiB object through each proxy (stream.sh)"
  echo
  grep -E '^\||^$' "$work/stream.md"
  echo
  echo "## Disk tier: hoard with a 1 MiB memory tier (objects over 128 KiB stay on disk) (hits read from disk)"
  echo
  grep -v '^PERF_RESULT' "$work/disk.md"
} > "$here/RESULTS.md"
echo "wrote $here/RESULTS.md"
