-- wrk script for bench/fill_live.sh: each request asks for a URL no earlier request asked
-- for (the origin's /1k with a query unique to this thread and request), in absolute form
-- through the proxy, until this thread has sent FILL_PER_THREAD of them; then it stops.
local origin = os.getenv("FILL_ORIGIN")
local quota = tonumber(os.getenv("FILL_PER_THREAD"))
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end

local sent = 0
function request()
  sent = sent + 1
  local url = string.format("%s&t=%d&n=%d", origin, id, sent)
  return wrk.format("GET", url, { Host = origin:match("^%a+://([^/]+)") })
end

local answered = 0
function response(status)
  answered = answered + 1
  if status ~= 200 then
    io.stderr:write("status " .. status .. "\n")
  end
  if answered >= quota then
    wrk.thread:stop()
  end
end
