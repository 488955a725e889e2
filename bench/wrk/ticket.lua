-- An action with a ticket: POST /api/actions starts it, POST /api/score redeems the ticket
-- (a fresh Idempotency-Key), with the same user's token. Nothing else is sent: two requests
-- per action.
-- wrk keeps one Lua state per thread for all of its connections, and response() is not told
-- which connection or request it answers. So a start names its kind and token in its
-- X-Request-ID, which the API echoes; its ticket goes into a queue that the next request()
-- of any connection empties first. Every ticket is redeemed by the next free connection:
-- no connection waits, and at most the queue's few tickets are left when the run stops.
-- args: tokens file (one JWT a line), run tag (keys unique across runs; A-Za-z0-9._), action
-- (ticket mode with min_seconds 0).
tokens = {}
counter = 0
tag = "run"
action = "bench_quest"
queue, head, tail = {}, 1, 0
-- Per-thread counts of the responses, summed into the summary (common.lua); queued: the
-- tickets still waiting for their redeem when the run stopped.
started, start_refused, redeemed, redeem_refused, unmatched, queued = 0, 0, 0, 0, 0, 0
counters = {"started", "start_refused", "redeemed", "redeem_refused", "unmatched", "queued"}

function init(args)
  for line in io.lines(args[1]) do tokens[#tokens + 1] = line end
  tag = args[2] or tag
  action = args[3] or action
end

local function request_headers(kind, index)
  return {
    ["Authorization"] = "Bearer " .. tokens[index],
    ["Content-Type"] = "application/json",
    ["X-Request-ID"] = string.format("%s-%d-%d-%s%d", tag, thread_id, counter, kind, index),
  }
end

function request()
  counter = counter + 1
  if head <= tail then
    local item = queue[head]
    queue[head] = nil
    head = head + 1
    queued = tail - head + 1
    local h = request_headers("r", item[1])
    h["Idempotency-Key"] = string.format("%s-%d-%d", tag, thread_id, counter)
    return wrk.format("POST", "/api/score", h,
      '{"action": "' .. action .. '", "ticket": "' .. item[2] .. '"}')
  end
  local index = (counter * 7 + thread_id * 131) % #tokens + 1
  return wrk.format("POST", "/api/actions", request_headers("s", index),
    '{"action": "' .. action .. '"}')
end

function response(status, headers, body)
  local rid = headers["x-request-id"] or headers["X-Request-ID"] or ""
  local kind, index = string.match(rid, "%-([sr])(%d+)$")
  if kind == "s" then
    local ticket = status == 201 and string.match(body, '"ticket":%s*"(%x+)"')
    if ticket then
      started = started + 1
      tail = tail + 1
      queue[tail] = {tonumber(index), ticket}
      queued = tail - head + 1
    else
      start_refused = start_refused + 1
    end
  elseif kind == "r" then
    if status == 200 and string.find(body, '"duplicate":false', 1, true) then
      redeemed = redeemed + 1
    else
      redeem_refused = redeem_refused + 1
    end
  else
    unmatched = unmatched + 1
  end
end
