#!/usr/bin/env bash
# Instructions per 1 KiB cache hit, counted by valgrind's callgrind: stable from run to run
# and unaffected by other load on the machine, so small changes to the hit path show up.
# Prints the count and leaves the profile in $OUT (callgrind_annotate it for the breakdown).
# Needs valgrind, wrk and the shared harness's origin. About a minute.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
harness="${HARNESS:-$repo/../shared/bench}"
port="${PORT:-18130}"
out="${OUT:-/tmp/hoard-callgrind.out}"
work="$(mktemp -d)"
trap 'kill "${pid:-}" 2>/dev/null || true; bash "$harness/origin.sh" stop >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

cargo build --release --manifest-path "$repo/Cargo.toml"
bash "$harness/origin.sh" start >/dev/null
target="http://127.0.0.1:18080/1k"
valgrind --tool=callgrind --callgrind-out-file="$out" "$repo/target/release/hoard" "$port" \
    --cache-dir "$work/cache" --access-log none >/dev/null 2>&1 &
pid=$!
until curl -s -o /dev/null "http://127.0.0.1:$port/_hoard/stats"; do sleep 0.2; done
for _ in 1 2 3; do curl -s -o /dev/null -x "127.0.0.1:$port" "$target"; sleep 0.5; done
requests=$(WRK_ABS_URL="$target" wrk -t1 -c4 -d6s -s "$harness/wrk-report.lua" "http://127.0.0.1:$port/" \
    | grep -o '"requests":[0-9]*' | cut -d: -f2)
kill -INT "$pid"; wait "$pid" 2>/dev/null || true
total=$(callgrind_annotate "$out" | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
echo "$requests hits, $((total / requests)) instructions per hit (start-up included, about 19 M in all); profile: $out"
