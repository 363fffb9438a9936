#!/usr/bin/env bash
# RAM per stored entry when the cache is filled live through the proxy (issue 17, target 1).
# wrk (2 threads, 32 connections) sends OBJECTS (1 000 000) distinct URLs through hoard: the
# shared origin's /1k with a unique query, 1 KiB bodies with max-age=3600, so each is stored
# (packed in the index database). hoard's RSS is read idle before and after the fill, and the
# difference divided by the entries stored. Run twice: with `--cache-memory 1MiB` (the index
# and what filling leaves behind, the memory tier at its smallest) and with the default
# 64 MiB memory tier (which fills with bodies and heads, its share counted too). hoard is
# pinned to core 0 and wrk to core 1. Prints a markdown table; about 2 × 8 minutes (MEMORIES
# picks the runs, for example MEMORIES=1MiB).
set -euo pipefail
objects="${OBJECTS:-1000000}"
port="${PORT:-18121}"
. "$(dirname "$0")/start.sh"
origin="http://127.0.0.1:18080/1k"

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$pid/status"; }
stats_field() { curl -s "http://127.0.0.1:$port/_hoard/stats" | python3 -c "import json, sys; print(json.load(sys.stdin)$1)"; }

rows=()
for memory in ${MEMORIES:-1MiB 64MiB}; do
    dir="$work/cache-$memory"
    taskset -c 0 "$hoard" "$port" --cache-dir "$dir" --cache-disk 64GiB --cache-memory "$memory" \
        --access-log none >/dev/null 2>&1 &
    pid=$!
    until curl -s -o /dev/null "http://127.0.0.1:$port/_hoard/stats"; do sleep 0.05; done
    # One request first, so the runtime, the connection pool and the database are set up.
    curl -s -o /dev/null -x "127.0.0.1:$port" "$origin?warm"
    sleep 1
    before=$(rss_kib)
    started=$(date +%s.%N)
    # wrk's threads stop at their quota, but wrk itself waits out -d: it is stopped once
    # hoard has answered them all.
    FILL_ORIGIN="$origin?fill" FILL_PER_THREAD=$((objects / 2)) taskset -c 1 \
        wrk -t2 -c32 -d3600s -s "$here/fill_live.lua" "http://127.0.0.1:$port/" >"$work/wrk.out" 2>&1 &
    wrk_pid=$!
    until [ "$(stats_field "['requests']")" -gt "$objects" ]; do sleep 0.5; done
    seconds=$(echo "$(date +%s.%N) - $started" | bc)
    kill -INT "$wrk_pid"; wait "$wrk_pid" || true
    # Writes still queued reach the database, and the blocking threads the fill started exit
    # (tokio keeps one 10 s after its last job): then the memory is read idle.
    sleep 12
    after=$(rss_kib)
    urls=$(stats_field "['cache']['urls']")
    failures=$(stats_field "['cache']['store_failures']")
    per_entry=$(echo "($after - $before) * 1024 / ($urls - 1)" | bc)
    rate=$(echo "$urls / $seconds" | bc)
    rows+=("| $memory | $urls | $rate | $((before / 1024)) | $((after / 1024)) | **$per_entry** | $failures |")
    kill "$pid"; wait "$pid" 2>/dev/null || true
done

echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git -C "$repo" rev-parse --short HEAD)"
echo
echo "| --cache-memory | entries stored | filled at (per s) | RSS before (MiB) | RSS after (MiB) | bytes per entry | store failures |"
echo "|---|--:|--:|--:|--:|--:|--:|"
printf '%s\n' "${rows[@]}"
