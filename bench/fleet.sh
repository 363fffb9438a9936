#!/usr/bin/env bash
# The fleet's cost: a cache hit served by the node that owns the URL, against the same hit
# through a node that does not own it (client -> non-owner -> owner over the peer pool), and
# against a hoard that is in no fleet, and through a non-owner that keeps copies of very hot
# objects (--peer-hot-copy); plus how many origin requests a fleet of three makes
# for 60 URLs asked of every node. Uses the shared harness's origin (nginx on :18080) and
# its wrk script; every hoard runs on core 0 and wrk on core 1 (PIN=1, as bench.sh does).
#
#   bash bench/fleet.sh            env: DURATION (6 s a point), ROUNDS (3, interleaved; the
#                                  median round is kept), CONNS (64), THREADS (2)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
harness="${HARNESS:-$repo/../shared/bench}"
. "$harness/lib.sh"
DURATION="${DURATION:-6}"
ROUNDS="${ROUNDS:-3}"
CONNS="${CONNS:-64}"
THREADS="${THREADS:-2}"
CLK_TCK="$(getconf CLK_TCK)"
port=18200
alone_port=18201
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  bash "$harness/origin.sh" stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

command -v wrk >/dev/null || bash "$harness/setup.sh"
cargo build --release --manifest-path "$repo/Cargo.toml" >&2
hoard="$repo/target/release/hoard"
bash "$harness/origin.sh" start >&2

peers="http://127.0.0.2:$port,http://127.0.0.3:$port,http://127.0.0.4:$port"
for n in 2 3 4; do
  taskset -c "$SERVER_CPU" "$hoard" "$port" --bind "127.0.0.$n" --allow 127.0.0.0/8 \
    --cache-dir "$work/node$n" --access-log none --peers "$peers" >&2 &
  pids+=($!)
done
# A second fleet of two whose non-owners keep copies of very hot objects.
hot_peers="http://127.0.0.5:$port,http://127.0.0.6:$port"
for n in 5 6; do
  taskset -c "$SERVER_CPU" "$hoard" "$port" --bind "127.0.0.$n" --allow 127.0.0.0/8 \
    --cache-dir "$work/hot$n" --access-log none --peers "$hot_peers" --peer-hot-copy 10s >&2 &
  pids+=($!)
done
taskset -c "$SERVER_CPU" "$hoard" "$alone_port" --cache-dir "$work/alone" --access-log none >&2 &
alone=$!
pids+=("$alone")
sleep 2

target="http://127.0.0.1:$ORIGIN_PORT/1k"
# The owner of the bench URL is named by the first Cache-Status entry of any node's answer.
owner_ip="$(curl -s -o /dev/null -D - -x "http://127.0.0.2:$port" "$target" \
  | awk -F'[ /:;]+' 'tolower($1)=="cache-status" {print $3; exit}')"
other_ip="127.0.0.2"; [ "$owner_ip" = "$other_ip" ] && other_ip="127.0.0.3"
curl -s -o /dev/null -x "http://127.0.0.1:$alone_port" "$target"
hot_owner="$(curl -s -o /dev/null -D - -x "http://127.0.0.5:$port" "$target" \
  | awk -F'[ /:;]+' 'tolower($1)=="cache-status" {print $3; exit}')"
hot_other="127.0.0.5"; [ "$hot_owner" = "$hot_other" ] && hot_other="127.0.0.6"
echo "bench URL $target is owned by $owner_ip; non-owner $other_ip" >&2

# Origin requests for 60 URLs, each asked of all three nodes.
o0="$(origin_requests)"
for i in $(seq 1 60); do
  for n in 2 3 4; do curl -s -o /dev/null -x "http://127.0.0.$n:$port" "$target?fleet=$i"; done
done
o1="$(origin_requests)"
fleet_origin=$(( o1 - o0 - 1 ))

cpu_ticks() { # utime+stime of the pids (all their threads)
  local p t=0 v
  for p in "$@"; do
    v="$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12+$13}')"
    t=$(( t + ${v:-0} ))
  done
  echo "$t"
}

export WRK_ABS_URL="$target"
LUA="$harness/wrk-report.lua"
fleet_pids=("${pids[@]:0:3}")
hot_pids=("${pids[@]:3:2}")

point() { # name connections proxy-host:port pids... -> one JSON line
  local name="$1" conns="$2" hp="$3"; shift 3
  local threads=$(( conns < THREADS ? conns : THREADS ))
  taskset -c "$CLIENT_CPU" wrk -t"$threads" -c"$conns" -d2s -s "$LUA" "http://$hp/" >/dev/null 2>&1
  local t0 t1 raw
  t0="$(cpu_ticks "$@")"
  raw="$(taskset -c "$CLIENT_CPU" wrk -t"$threads" -c"$conns" -d"${DURATION}s" --latency --timeout 10s -s "$LUA" "http://$hp/" 2>&1)"
  t1="$(cpu_ticks "$@")"
  echo "$raw" | grep '^WRKJSON' | sed 's/^WRKJSON //' \
    | "$PYTHON" -c 'import json,sys; d=json.load(sys.stdin); d.update(name=sys.argv[1], ticks=int(sys.argv[2]), hz=int(sys.argv[3])); print(json.dumps(d))' \
      "$name" "$(( t1 - t0 ))" "$CLK_TCK"
}

results="$work/points.jsonl"
for round in $(seq 1 "$ROUNDS"); do
  echo "round $round of $ROUNDS" >&2
  point alone "$CONNS" "127.0.0.1:$alone_port" "$alone" >>"$results"
  point owner "$CONNS" "$owner_ip:$port" "${fleet_pids[@]}" >>"$results"
  point non-owner "$CONNS" "$other_ip:$port" "${fleet_pids[@]}" >>"$results"
  point hot-copy "$CONNS" "$hot_other:$port" "${hot_pids[@]}" >>"$results"
  # Latency below saturation: one connection, one request at a time.
  point owner-1 1 "$owner_ip:$port" "${fleet_pids[@]}" >>"$results"
  point non-owner-1 1 "$other_ip:$port" "${fleet_pids[@]}" >>"$results"
done

"$PYTHON" - "$results" "$fleet_origin" "$(git -C "$repo" rev-parse --short HEAD)" "$ROUNDS" "$DURATION" "$CONNS" <<'PY'
import json, statistics, sys
points = [json.loads(line) for line in open(sys.argv[1])]
fleet_origin, commit, rounds, duration = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
def figures(p):
    secs = p["duration_us"] / 1e6
    cpu_us = p["ticks"] / p["hz"] * 1e6 / max(p["requests"], 1)
    return {"rps": p["requests"] / secs, "cpu_us": cpu_us, "p50_ms": p["p50_us"] / 1000,
            "p99_ms": p["p99_us"] / 1000, "errors": p["err_connect"] + p["err_read"] + p["err_write"] + p["err_status"] + p["err_timeout"]}
rows = {}
for name in ["alone", "owner", "non-owner", "hot-copy", "owner-1", "non-owner-1"]:
    mine = sorted((figures(p) for p in points if p["name"] == name), key=lambda f: f["rps"])
    rows[name] = mine[len(mine) // 2]
print(f"# hoard fleet: hits through the owner and through a non-owner (commit {commit}, {rounds} rounds of {duration} s, median round)\n")
print("| point | req/s | CPU µs/req (all nodes) | p50 ms | p99 ms | errors |")
print("|---|---|---|---|---|---|")
labels = {"alone": "hit, hoard in no fleet", "owner": "hit via the owner", "non-owner": "hit via a non-owner (one peer hop)",
          "hot-copy": "hit via a non-owner with --peer-hot-copy 10s",
          "owner-1": "hit via the owner, 1 connection", "non-owner-1": "hit via a non-owner, 1 connection"}
for name, f in rows.items():
    print(f"| {labels[name]} | {f['rps']:.0f} | {f['cpu_us']:.1f} | {f['p50_ms']:.2f} | {f['p99_ms']:.2f} | {f['errors']} |")
owner, other = rows["owner"], rows["non-owner"]
print()
print(f"- non-owner hit / owner hit CPU: {other['cpu_us'] / owner['cpu_us']:.2f}x (bound: 2x)")
print(f"- p99 added by the peer hop at saturation ({sys.argv[6]} connections): {other['p99_ms'] - owner['p99_ms']:.2f} ms")
print(f"- p99 added by the peer hop, one request at a time: {rows['non-owner-1']['p99_ms'] - rows['owner-1']['p99_ms']:.3f} ms (bound: 1 ms)")
print(f"- hot-copy non-owner hit / owner hit CPU: {rows['hot-copy']['cpu_us'] / owner['cpu_us']:.2f}x")
print(f"- origin requests for 60 URLs asked of each of 3 nodes: {fleet_origin} (one per URL: 60)")
PY
