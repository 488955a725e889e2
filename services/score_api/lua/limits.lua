-- Library (prepended to award.lua and ticket.lua): the clock and GCRA limits.
-- A limit is four ARGV values (name, quota, window_ms, cost) and one key holding its
-- theoretical arrival time (TAT) in integer microseconds. Each use moves the TAT by
-- cost x window / quota: cost 1 counts requests, cost = points makes a points budget.
-- check() decides without writing; consume() writes what the checks decided, so a refusal
-- consumes nothing. tests/models.py holds the Python reference the tests compare with.

-- Milliseconds: ARGV's override when given ('' = Redis TIME, the clock all replicas share).
local function clock_ms(override)
  if override ~= '' then return tonumber(override) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local LIMITS = {key_at = 0, arg_at = 0, now = 0, tats = {},
  tight_name = '', tight_left = -1, tight_remaining = 0, tight_reset = 0}

-- Limit i (1-based) is KEYS[key_at + i] and ARGV[arg_at + 4i - 3 .. arg_at + 4i].
-- Returns nil when allowed, else {'limited', name, wait_ms}.
local function limit_check(i)
  local a = LIMITS.arg_at + 4 * (i - 1)
  local lname, quota = ARGV[a + 1], tonumber(ARGV[a + 2])
  local window, cost = tonumber(ARGV[a + 3]) * 1000, tonumber(ARGV[a + 4])
  local now = LIMITS.now
  local interval = math.floor(window / quota)
  local tat = tonumber(redis.call('GET', KEYS[LIMITS.key_at + i]) or now)
  if tat < now then tat = now end
  local new_tat = tat + interval * cost
  local allow_at = new_tat - window
  if now < allow_at then
    return {'limited', lname, string.format('%d', math.ceil((allow_at - now) / 1000))}
  end
  LIMITS.tats[i] = new_tat
  local remaining = math.floor((window - (new_tat - now)) / interval)
  -- The tightest limit: the fewest further uses of this kind left.
  local left = math.floor(remaining / cost)
  if LIMITS.tight_left < 0 or left < LIMITS.tight_left then
    LIMITS.tight_name, LIMITS.tight_left = lname, left
    LIMITS.tight_remaining, LIMITS.tight_reset = remaining, new_tat - now
  end
  return nil
end

-- Limits first..last in order; the first refusal, or nil when all allow.
local function limits_check(first, last)
  for i = first, last do
    local refused = limit_check(i)
    if refused then return refused end
  end
  return nil
end

local function limit_consume(first, last)
  for i = first, last do
    local ttl = math.ceil((LIMITS.tats[i] - LIMITS.now) / 1000)
    redis.call('SET', KEYS[LIMITS.key_at + i], string.format('%d', LIMITS.tats[i]), 'PX', ttl)
  end
end

-- The tightest limit's name, remaining units and reset (ms), as reply strings.
local function limit_tightest()
  return LIMITS.tight_name, string.format('%d', math.max(LIMITS.tight_remaining, 0)),
    string.format('%d', math.ceil(LIMITS.tight_reset / 1000))
end
