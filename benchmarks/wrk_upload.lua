-- wrk script: POST one image as multipart/form-data to every request, then print the latency
-- percentiles and counts as one JSON line (wrk's own report has no p95).
-- Environment: WRK_IMAGE (file path), WRK_FIELD ("file" or "files"), WRK_COPIES (files per request).
local path = os.getenv("WRK_IMAGE")
local field = os.getenv("WRK_FIELD") or "file"
local copies = tonumber(os.getenv("WRK_COPIES") or "1")
local handle = assert(io.open(path, "rb"))
local image = handle:read("*a")
handle:close()

local boundary = "----wrkboundary7d1f"
local parts = {}
for i = 1, copies do
  parts[#parts + 1] = "--" .. boundary .. "\r\n" ..
    'Content-Disposition: form-data; name="' .. field .. '"; filename="image' .. i .. '.jpg"\r\n' ..
    "Content-Type: image/jpeg\r\n\r\n" .. image .. "\r\n"
end
wrk.method = "POST"
wrk.body = table.concat(parts) .. "--" .. boundary .. "--\r\n"
wrk.headers["Content-Type"] = "multipart/form-data; boundary=" .. boundary

-- 503 answers (overload shedding) are counted apart from other non-2xx ones: each wrk thread counts
-- its own, and done() sums them.
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) shed = 0 end
function response(status, headers, body) if status == 503 then shed = shed + 1 end end

function done(summary, latency, requests)
  local e = summary.errors
  local total_shed = 0
  for _, thread in ipairs(threads) do total_shed = total_shed + (thread:get("shed") or 0) end
  io.write(string.format(
    '{"requests": %d, "seconds": %.3f, "p50_ms": %.3f, "p95_ms": %.3f, "p99_ms": %.3f, "max_ms": %.3f, ' ..
    '"errors_connect": %d, "errors_read": %d, "errors_write": %d, "errors_status": %d, "errors_timeout": %d, ' ..
    '"shed_503": %d}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000, latency:percentile(95) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, e.connect, e.read, e.write, e.status, e.timeout, total_shed))
end
