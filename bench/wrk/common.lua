-- Shared by every scenario: thread ids, and one JSON line of figures when wrk is done.
-- A scenario may name numeric globals of its own in `counters`: each is summed over the
-- threads and written as "count_<name>" (wrk keeps one Lua state per thread).
local counter_id = 0
local threads = {}
counters = {}

function setup(thread)
  thread:set("thread_id", counter_id)
  counter_id = counter_id + 1
  threads[#threads + 1] = thread
end

function done(summary, latency, requests)
  local e = summary.errors
  local extra = ""
  for _, name in ipairs(counters) do
    local total = 0
    for _, thread in ipairs(threads) do total = total + (thread:get(name) or 0) end
    extra = extra .. string.format(', "count_%s": %d', name, total)
  end
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "bytes": %d, "errors_status": %d, ' ..
    '"errors_connect": %d, "errors_read": %d, "errors_write": %d, "errors_timeout": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f%s}\n',
    summary.requests, summary.duration, summary.bytes, e.status, e.connect, e.read, e.write,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean, extra))
end
