-- wrk script for benches/wrk/compare-304.sh: a conditional GET that must be
-- answered `304 Not Modified`, and a count of every answer that was not.
--
-- Chatty's unchanged poll (the default; also sent, byte for byte, to the bare
-- actix-web reference `chatty-bench bare-304`, which ignores token and cursor):
--   CHATTY_TOKEN   guest token from POST /api/v1/join
--   CHATTY_ROOM    room id
--   CHATTY_CURSOR  room cursor, as in the first poll's ETag (without quotes)
-- sends GET /api/v1/rooms/$CHATTY_ROOM/events?cursor=$CHATTY_CURSOR with
-- `Authorization: Bearer $CHATTY_TOKEN` and `If-None-Match: "$CHATTY_CURSOR"`.
--
-- A static file (the nginx baseline), when STATIC_PATH is set:
--   STATIC_PATH    path of the file, e.g. /poll.json
--   STATIC_ETAG    its ETag, quotes included, e.g. "6570a2b1-c8"
-- sends GET $STATIC_PATH with `If-None-Match: $STATIC_ETAG`.
--
-- Status counting (POLL304_COUNT_STATUS, default 1): response() counts every
-- answer that is not a 304 and done() prints the count. Defining response()
-- makes wrk parse every response's headers into a Lua table: on the 2-core
-- machine that raised wrk's user time by about 70 % against nginx, whose
-- 304s already keep wrk's core over 90 % busy, so the client rather than the
-- server could set the pace. compare-304.sh therefore uses counting for a
-- short checked run per server and sets POLL304_COUNT_STATUS=0 for the
-- measured rounds, where wrk still counts statuses >= 400 itself
-- (status_ge400) and Chatty's own metrics prove that every poll was
-- answered 304.
--
-- done() prints one machine-readable line (RESULT ...) that compare-304.sh
-- parses; non304=-1 means "not counted".

local function need(name)
  local value = os.getenv(name)
  if value == nil or value == "" then
    error("poll-304.lua: environment variable " .. name .. " is not set")
  end
  return value
end

local static_path = os.getenv("STATIC_PATH")
local request_path
if static_path ~= nil and static_path ~= "" then
  request_path = static_path
  wrk.headers["If-None-Match"] = need("STATIC_ETAG")
else
  local token = need("CHATTY_TOKEN")
  local room = need("CHATTY_ROOM")
  local cursor = need("CHATTY_CURSOR")
  request_path = "/api/v1/rooms/" .. room .. "/events?cursor=" .. cursor
  wrk.headers["Authorization"] = "Bearer " .. token
  wrk.headers["If-None-Match"] = '"' .. cursor .. '"'
end
wrk.method = "GET"
wrk.path = request_path

-- One Lua state per wrk thread: collect them so done() can add up counts.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  not_modified = 0
  other = 0
  first_other = 0
end

local count_status = os.getenv("POLL304_COUNT_STATUS") ~= "0"

if count_status then
  function response(status, headers, body)
    if status == 304 then
      not_modified = not_modified + 1
    else
      if other == 0 then
        first_other = status
      end
      other = other + 1
    end
  end
end

function done(summary, latency, requests)
  local ok, bad, first_bad = -1, -1, 0
  if count_status then
    ok, bad = 0, 0
    for _, thread in ipairs(threads) do
      ok = ok + thread:get("not_modified")
      local b = thread:get("other")
      if b > 0 and first_bad == 0 then
        first_bad = thread:get("first_other")
      end
      bad = bad + b
    end
  end
  local e = summary.errors
  local seconds = summary.duration / 1e6
  io.write(string.format(
    "RESULT requests=%d seconds=%.3f rps=%.1f avg_ms=%.3f p50_ms=%.3f p99_ms=%.3f max_ms=%.3f bytes_per_req=%.1f status_ge400=%d socket_errors=%d counted=%d status304=%d non304=%d first_non304=%d\n",
    summary.requests, seconds, summary.requests / seconds,
    latency.mean / 1000, latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000,
    summary.bytes / math.max(summary.requests, 1),
    e.status, e.connect + e.read + e.write + e.timeout,
    count_status and 1 or 0, ok, bad, first_bad))
  if bad > 0 then
    io.write(string.format("WARNING: %d responses were not 304 (first: %d)\n", bad, first_bad))
  end
end
