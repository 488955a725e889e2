-- POST /api/score with rotating valid tokens and a fresh Idempotency-Key per request.
-- args: tokens file (one JWT a line), run tag (keeps keys unique across runs), action.
tokens = {}
counter = 0
tag = "run"
body = '{"action": "quest_complete"}'

function init(args)
  for line in io.lines(args[1]) do tokens[#tokens + 1] = line end
  tag = args[2] or tag
  if args[3] then body = '{"action": "' .. args[3] .. '"}' end
end

function request()
  counter = counter + 1
  local token = tokens[(counter * 7 + thread_id * 131) % #tokens + 1]
  return wrk.format("POST", "/api/score", {
    ["Authorization"] = "Bearer " .. token,
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = string.format("%s-%d-%d", tag, thread_id, counter),
  }, body)
end
