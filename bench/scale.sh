#!/usr/bin/env bash
# Scale: 1 KiB hit req/s with ENTRIES (1 000 000) entries in the index against 1 000 (the
# lookup must stay O(1): target >= 0.9x), the start-up time and resident memory such an index
# costs, and the memory IDLE (10 000) idle keep-alive connections cost (target < 100 MiB).
# hoard is pinned to core 0 and wrk to core 1, as in the shared harness. Writes
# bench/SCALE.md with the date, machine and commit. About 3 minutes; ROUNDS=3 repeats the
# measurements interleaved and compares medians.
set -euo pipefail
entries="${ENTRIES:-1000000}"
idle="${IDLE:-10000}"
duration="${DURATION:-10}"
port="${PORT:-18120}"
. "$(dirname "$0")/start.sh"
ulimit -n $((idle + 1000)) 2>/dev/null || true
target="http://127.0.0.1:18080/1k"

fill() { # DIR ENTRIES: an index of synthetic entries (src/cache/index.rs, the ignored tool test)
    HOARD_FILL_DIR="$1" HOARD_FILL_ENTRIES="$2" cargo test --release --quiet --lib \
        --manifest-path "$repo/Cargo.toml" -- --ignored fill_index_for_the_scale_bench >/dev/null 2>&1
}
start_hoard() { # DIR
    local started
    started=$(date +%s.%N)
    taskset -c 0 "$hoard" "$port" --cache-dir "$1" --cache-disk 64GiB --access-log none >/dev/null 2>&1 &
    pid=$!
    until curl -s -o /dev/null "http://127.0.0.1:$port/_hoard/stats"; do sleep 0.05; done
    ready=$(printf '%.2f' "$(echo "$(date +%s.%N) - $started" | bc)")
    # The rest of a large index loads in the background; hits are measured once it has.
    until curl -s "http://127.0.0.1:$port/_hoard/stats" | grep -q '"index_loading":false'; do sleep 0.05; done
    loaded=$(printf '%.2f' "$(echo "$(date +%s.%N) - $started" | bc)")
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
rss_mib() { awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$pid/status"; }

measure() { # N: one round against the index of N entries; appends a row, records its req/s
    local n=$1
    start_hoard "$work/cache-$n"
    for _ in 1 2 3; do curl -s -o /dev/null -x "127.0.0.1:$port" "$target"; done
    WRK_ABS_URL="$target" taskset -c 1 wrk -t2 -c64 -d2s -s "$harness/wrk-report.lua" "http://127.0.0.1:$port/" >/dev/null
    before=$(cpu_ticks)
    out=$(WRK_ABS_URL="$target" taskset -c 1 wrk -t2 -c64 -d"${duration}s" -s "$harness/wrk-report.lua" "http://127.0.0.1:$port/")
    after=$(cpu_ticks)
    requests=$(echo "$out" | grep -o '"requests":[0-9]*' | cut -d: -f2)
    errors=$(echo "$out" | grep -o '"err_[a-z]*":[0-9]*' | cut -d: -f2 | paste -sd+ | bc)
    rps=$((requests / duration))
    cpu=$(echo "scale=2; ($after - $before) * 1000000 / $(getconf CLK_TCK) / $requests" | bc)
    rows+=("| $n | $round | $ready | $loaded | $(rss_mib) | $rps | $cpu | $errors |")
    eval "rps_$n+=($rps)"
    kill "$pid"; wait "$pid" 2>/dev/null || true
}
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }

rows=()
rps_1000=()
declare -a "rps_$entries=()"
for n in 1000 "$entries"; do fill "$work/cache-$n" "$n"; done
# ROUNDS (1) interleaved rounds; the ratio is of the medians (this machine is noisy).
for round in $(seq 1 "${ROUNDS:-1}"); do
    for n in 1000 "$entries"; do measure "$n"; done
done
big_rps="rps_$entries[@]"
big=$(median "${!big_rps}")
small=$(median "${rps_1000[@]}")
ratio=$(printf '%.2f' "$(echo "scale=3; $big / $small" | bc)")

start_hoard "$work/idle"
curl -s -o /dev/null -x "127.0.0.1:$port" "$target"
idle_line=$(python3 "$here/idle_connections.py" "127.0.0.1:$port" "$pid" "$target" "$idle")
kill "$pid"; wait "$pid" 2>/dev/null || true

{
    echo "# hoard at scale"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- commit: $(git -C "$repo" rev-parse --short HEAD)"
    echo "- machine: $(uname -srm), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
    echo "- hoard pinned to core 0, wrk (2 threads, 64 connections, ${duration} s) to core 1; 1 KiB hits from the memory tier"
    echo
    echo "| entries in the index | round | serving after (s) | index loaded after (s) | RSS (MiB) | hit 1 KiB req/s | CPU µs/req | errors |"
    echo "|--:|--:|--:|--:|--:|--:|--:|--:|"
    printf '%s\n' "${rows[@]}"
    echo
    echo "hit req/s with $entries entries / with 1000, medians of ${ROUNDS:-1} interleaved round(s): $big / $small = **${ratio}×** (target ≥ 0.9×)"
    echo
    echo "Idle keep-alive connections (each has served one request): \`$idle_line\`"
} > "$here/SCALE.md"
cat "$here/SCALE.md"
