#!/usr/bin/env bash
# TLS hits beside nginx: hoard and nginx (`listen ssl http2`, `proxy_cache`) as TLS reverse
# proxies in front of the shared harness's origin, with the same ECDSA P-256 certificate, one
# server core each (hoard's runtime on the server CPU; one nginx worker), the load generator on
# the other core. Points: hit 1 KiB over keep-alive (wrk, 50 connections), hit 1 KiB with a new
# connection and full handshake per request (wrk with Connection: close, no session reuse), and
# HTTP/2 hit throughput (h2load, 10 connections x 10 streams). ROUNDS interleaves repeated
# rounds and keeps each point's median (POINTS picks some). Prints a markdown table; needs nginx, wrk, h2load
# (nghttp2-client) and openssl.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
harness="${HARNESS:-$repo/../shared/bench}"
. "$harness/lib.sh"
rounds="${ROUNDS:-1}"
duration="${DURATION:-6}"
hoard_port=18443
nginx_port=18444
work="$(mktemp -d)"
chmod 755 "$work"  # nginx workers run as nobody
trap 'kill "${hoard_pid:-}" 2>/dev/null || true; [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null; bash "$harness/origin.sh" stop >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

for tool in nginx wrk h2load openssl; do
  command -v "$tool" >/dev/null || die "$tool is needed (apt-get install nginx wrk nghttp2-client openssl)"
done
cargo build --release --manifest-path "$repo/Cargo.toml" >&2
bash "$harness/origin.sh" start >&2

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null

server_cmd "$repo/target/release/hoard" "$hoard_port" --cache-dir "$work/hoard" --access-log none \
  --upstream "http://127.0.0.1:$ORIGIN_PORT" --tls-cert "$work/cert.pem" --tls-key "$work/key.pem" &
hoard_pid=$!

mkdir -p "$work/nginx/cache" "$work/nginx/tmp"
cat > "$work/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $work/nginx/tmp/body;
  proxy_temp_path $work/nginx/tmp/proxy;
  fastcgi_temp_path $work/nginx/tmp/fastcgi;
  uwsgi_temp_path $work/nginx/tmp/uwsgi;
  scgi_temp_path $work/nginx/tmp/scgi;
  keepalive_requests 1000000;
  upstream origin { server 127.0.0.1:$ORIGIN_PORT; keepalive 128; }
  proxy_cache_path $work/nginx/cache levels=1:2 keys_zone=tls:64m inactive=1d use_temp_path=off;
  ssl_session_cache shared:SSL:10m;
  server {
    listen 127.0.0.1:$nginx_port ssl http2 backlog=4096;
    ssl_certificate $work/cert.pem;
    ssl_certificate_key $work/key.pem;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache tls;
      add_header X-Cache-Status \$upstream_cache_status always;
    }
  }
}
CONF
chown -R nobody "$work/nginx" 2>/dev/null || true
server_cmd nginx -c "$work/nginx.conf" -p "$work/nginx" -g "daemon on;" || die "nginx did not start: $(cat "$work/nginx/error.log" 2>/dev/null)"
sleep 1
for port in $hoard_port $nginx_port; do
  for _ in 1 2 3; do curl -sk -o /dev/null "https://127.0.0.1:$port/1k"; done
  curl -sk -D - -o /dev/null "https://127.0.0.1:$port/1k" | grep -qiE 'hoard; hit|x-cache-status: HIT' \
    || die "port $port does not answer /1k from its cache"
done

# CPU seconds (user + system, with reaped children: a replaced nginx worker's time moves to
# its master) the server's processes have used.
cpu_of() {
  local total=0 p
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] || continue
    total=$(awk -v t="$total" -v hz="$(getconf CLK_TCK)" '{print t + ($14 + $15 + $16 + $17) / hz}' "/proc/$p/stat")
  done
  echo "$total"
}
# The master and its workers (whose command line no longer names the config).
nginx_pids() { local master; master=$(cat "$work/nginx.pid"); echo "$master $(pgrep -P "$master" | tr '\n' ' ')"; }
# The hoard process itself, not the shell that started it.
hoard_pid=$(pgrep -f "target/release/hoard $hoard_port" | head -1)
pids_of() { if [ "$1" = hoard ]; then echo "$hoard_pid"; else nginx_pids; fi; }

# One point: prints "requests_per_second cpu_microseconds_per_request".
measure() {
  local name="$1" port="$2" server="$3" before after out reqs secs
  before=$(cpu_of $(pids_of "$server"))
  case "$name" in
    keepalive) out=$(client_cmd wrk -t1 -c50 -d"${duration}s" "https://127.0.0.1:$port/1k") ;;
    handshake) out=$(client_cmd wrk -t1 -c20 -d"${duration}s" -H 'Connection: close' "https://127.0.0.1:$port/1k") ;;
    h2) out=$(client_cmd h2load -c10 -m10 -D"$duration" "https://127.0.0.1:$port/1k") ;;
  esac
  after=$(cpu_of $(pids_of "$server"))
  case "$name" in
    h2) reqs=$(awk '/^requests:/ {print $8}' <<<"$out"); secs=$duration ;;
    *) reqs=$(awk '/requests in/ {print $1}' <<<"$out"); secs=$(awk '/requests in/ {sub(/s,/, "", $4); print $4}' <<<"$out") ;;
  esac
  awk -v r="$reqs" -v s="$secs" -v b="$before" -v a="$after" \
    'BEGIN { printf "%.0f %.1f\n", r / s, (a - b) * 1e6 / (r > 0 ? r : 1) }'
}

median() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
declare -A rps cpu
for round in $(seq "$rounds"); do
  for point in ${POINTS:-keepalive handshake h2}; do
    for server in hoard nginx; do
      if [ "$server" = hoard ]; then port=$hoard_port; else port=$nginx_port; fi
      read -r r c < <(measure "$point" "$port" "$server")
      rps[$server.$point]+="$r "; cpu[$server.$point]+="$c "
      echo "round $round $point $server: $r req/s, $c CPU us/req" >&2
    done
  done
done

echo "| point | hoard req/s | nginx req/s | ratio | hoard CPU µs/req | nginx CPU µs/req |"
echo "|---|---|---|---|---|---|"
for point in ${POINTS:-keepalive handshake h2}; do
  h=$(tr ' ' '\n' <<<"${rps[hoard.$point]}" | grep . | median)
  n=$(tr ' ' '\n' <<<"${rps[nginx.$point]}" | grep . | median)
  hc=$(tr ' ' '\n' <<<"${cpu[hoard.$point]}" | grep . | median)
  nc=$(tr ' ' '\n' <<<"${cpu[nginx.$point]}" | grep . | median)
  label=$(case $point in keepalive) echo "TLS hit 1 KiB, keep-alive";; handshake) echo "TLS hit 1 KiB, handshake per request";; h2) echo "HTTP/2 hit 1 KiB (10 conns x 10 streams)";; esac)
  echo "| $label | $h | $n | $(awk -v a="$h" -v b="$n" 'BEGIN {printf "%.2fx", a / b}') | $hc | $nc |"
done
