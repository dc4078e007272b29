-- wrk script for bench-serve: POST JSON bodies read from $WRK_BODIES (one body per line) to $WRK_PATH, cycling
-- through them (each connection thread starts at its own offset), and print one JSON line at the end:
--   WRK_JSON {"requests", "duration_us", "errors": {...}, "latency_us": {"mean", "max", "p50", "p90", "p99"}}
-- wrk counts a response outside 2xx/3xx as a "status" error.

local bodies = {}
for line in io.lines(os.getenv("WRK_BODIES")) do
  bodies[#bodies + 1] = line
end
local route = os.getenv("WRK_PATH") or "/classify"
local headers = {["Content-Type"] = "application/json"}
local at = 0

function setup(thread)
  thread:set("offset", math.random(#bodies))
end

function init(args)
  at = (offset or 0) % #bodies
end

function request()
  at = at % #bodies + 1
  return wrk.format("POST", route, headers, bodies[at])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "errors": {"connect": %d, "read": %d, ' ..
    '"write": %d, "status": %d, "timeout": %d}, "latency_us": {"mean": %.1f, "max": %d, "p50": %d, "p90": %d, ' ..
    '"p99": %d, "p999": %d}}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9)))
end
