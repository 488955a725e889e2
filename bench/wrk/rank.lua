-- GET /api/users/{id}/rank?around=5 for random users of the preloaded board.
-- args: number of preloaded users (ids u0000000 ..).
users = 1

function init(args)
  users = tonumber(args[1])
  math.randomseed(os.time() + thread_id * 7919)
end

function request()
  local path = string.format("/api/users/u%07d/rank?around=5", math.random(0, users - 1))
  return wrk.format("GET", path)
end
