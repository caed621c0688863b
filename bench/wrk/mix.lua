-- wrk script: tapad's traffic mix, a fresh timestamp and user for every request.
--
--   wrk -t1 -c32 -d10s -s bench/wrk/mix.lua http://127.0.0.1:8080 -- post
--   wrk ... -- get
--   wrk ... -- post ids   -- every event with an id of its own (thread, run, counter)
--
-- 95% of requests are for the current hour and 5% for one of the past 24 hours
-- (the contract's "traffic the server is built for"); POSTs name one of 100,000
-- users and are 10% clicks, 90% impressions. done() prints one line starting with
-- WRKJSON that bench/run.py reads, so no figure is scraped from wrk's prose.

local HOUR_MS = 3600000
local PAST_RATIO = 0.05
local PAST_HOURS = 24
local USERS = 100000
local CLICK_RATIO = 0.10

local method = "POST"
local next_id = 0
local with_ids = false
local id_prefix = ""
local serial = 0

function setup(thread)
  next_id = next_id + 1
  thread:set("id", next_id)
end

function init(args)
  method = string.upper(args[1] or "post")
  with_ids = args[2] == "ids"
  math.randomseed(os.time() * 1000 + (id or 0))
  id_prefix = string.format("w%d-%d-%d-", id or 0, os.time(), math.random(1, 1000000000))
end

local function timestamp()
  local now = os.time() * 1000 + math.random(0, 999)
  if math.random() < PAST_RATIO then
    return now - math.random(1, PAST_HOURS) * HOUR_MS
  end
  return now
end

function request()
  local path
  if method == "GET" then
    path = string.format("/analytics?timestamp=%.0f", timestamp())
  else
    local kind = math.random() < CLICK_RATIO and "click" or "impression"
    path = string.format(
      "/analytics?timestamp=%.0f&user=u%d&%s", timestamp(), math.random(1, USERS), kind
    )
    if with_ids then
      serial = serial + 1
      path = path .. "&id=" .. id_prefix .. serial
    end
  end
  return wrk.format(method, path)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, '
      .. '"status": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, '
      .. '"max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean
  ))
end
