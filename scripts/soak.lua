-- wrk script for scripts/soak.sh: absolute-form requests through the proxy, a mix of cached
-- objects (hits after the first) and no-store ones (always misses), and a count of non-2xx
-- answers in done().
local origin = os.getenv("SOAK_ORIGIN") or "127.0.0.1:18080"
local paths = { "/1k", "/16k", "/256k", "/1k", "/16k", "/nocache/1k" }
local counter = 0

request = function()
  counter = counter + 1
  local path = paths[(counter % #paths) + 1]
  return wrk.format("GET", "http://" .. origin .. path, { ["Host"] = origin })
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'SOAK requests=%d errors_connect=%d errors_read=%d errors_write=%d errors_status=%d errors_timeout=%d p99_ms=%.1f\n',
    summary.requests, e.connect, e.read, e.write, e.status, e.timeout, latency:percentile(99) / 1000))
end
