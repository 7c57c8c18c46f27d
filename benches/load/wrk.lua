-- wrk script of the load bench. Environment:
--   REQ_PATH     path to request
--   TOKENS_FILE  one bearer token per line (rotated per request); unset: no token
local path = os.getenv("REQ_PATH") or "/"
local tokens_file = os.getenv("TOKENS_FILE")
local headers = {}
local tokens = {}
local i = 0

function init(args)
  if tokens_file then
    for line in io.lines(tokens_file) do
      if #line > 0 then tokens[#tokens + 1] = "Bearer " .. line end
    end
  end
end

function request()
  if #tokens == 0 then
    return wrk.format("GET", path)
  end
  i = i % #tokens + 1
  headers["Authorization"] = tokens[i]
  return wrk.format("GET", path, headers)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests":%d,"duration_us":%d,"socket_errors":%d,"non2xx":%d,"p50_us":%d,"p99_us":%d,"p999_us":%d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
