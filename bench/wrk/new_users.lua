-- wrk script for bench/growth.py: every POST a user never seen before, all in one hour.
--
--   wrk -t1 -c32 -d5s -s bench/wrk/new_users.lua http://127.0.0.1:8080 -- post 1700000000000
--   wrk ... -- get 1700000000000
--
-- The second argument is a timestamp (ms) inside the hour under test, so a run that
-- crosses the top of an hour still measures the hour that was filled. User names are
-- "u", 8 random hex digits, then this thread's and this run's counter: spread over the
-- whole key space (as real names are, not appended at one end of an index) and distinct.
-- done() prints the WRKJSON line bench/run.py also reads.

local method = "POST"
local ts = 0
local next_id = 0
local counter = 0
local run = 0

function setup(thread)
  next_id = next_id + 1
  thread:set("id", next_id)
end

function init(args)
  method = string.upper(args[1] or "post")
  ts = tonumber(args[2] or "0")
  run = os.time() % 100000
  math.randomseed(os.time() * 1000 + (id or 0))
end

function request()
  if method == "GET" then
    return wrk.format("GET", string.format("/analytics?timestamp=%.0f", ts))
  end
  counter = counter + 1
  local user = string.format(
    "u%04x%04x.%d.%d.%d", math.random(0, 65535), math.random(0, 65535), id or 0, run, counter
  )
  local kind = math.random() < 0.1 and "click" or "impression"
  return wrk.format("POST", string.format("/analytics?timestamp=%.0f&user=%s&%s", ts, user, kind))
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
