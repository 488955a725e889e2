-- Start an action: issue one ticket, atomically with the limits it counts against.
-- KEYS: 1 open tickets of (user, action), 2 the new ticket, 3 banned, then one key per limit
--       (address limits first)
-- ARGV: 1 user_id, 2 action, 3 ticket id, 4 min_ms, 5 max_ms, 6 max_open,
--       7 now_ms ('' = Redis TIME), 8 address limits A, 9 user limits U,
--       then (A + U) x (name, quota, window_ms, cost)
-- At most max_open tickets stay open: the oldest beyond that are cancelled (they leave the
-- open set, which award.lua checks), so stockpiling tickets gains nothing. Returns
--   {'new', ticket, not_before_ms, expires_ms, cancelled, tightest_limit, remaining, reset_ms}
--   | {'limited', limit_name, wait_ms} | {'banned'}
local open_tickets, ticket_key, banned = KEYS[1], KEYS[2], KEYS[3]
local user, action, ticket = ARGV[1], ARGV[2], ARGV[3]
local min_ms, max_ms, max_open = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local now_ms = clock_ms(ARGV[7])
local n_ip, n_user = tonumber(ARGV[8]), tonumber(ARGV[9])
LIMITS.key_at, LIMITS.arg_at, LIMITS.now = 3, 9, now_ms * 1000

local refused = limits_check(1, n_ip)
if refused then return refused end
if redis.call('HEXISTS', banned, user) == 1 then return {'banned'} end
refused = limits_check(n_ip + 1, n_ip + n_user)
if refused then return refused end
limit_consume(1, n_ip + n_user)

-- Expired tickets leave the open set; then the oldest make room for the new one.
redis.call('ZREMRANGEBYSCORE', open_tickets, '-inf', string.format('%d', now_ms - max_ms))
local cancelled = redis.call('ZCARD', open_tickets) - max_open + 1
if cancelled > 0 then
  redis.call('ZPOPMIN', open_tickets, cancelled)
else
  cancelled = 0
end
local started = string.format('%d', now_ms)
local not_before = string.format('%d', now_ms + min_ms)
local expires = string.format('%d', now_ms + max_ms)
redis.call('ZADD', open_tickets, started, ticket)
redis.call('PEXPIRE', open_tickets, max_ms)
redis.call('HSET', ticket_key, 'user', user, 'action', action, 'started', started,
  'not_before', not_before, 'expires', expires, 'state', TICKET_STATE.open)
redis.call('PEXPIRE', ticket_key, max_ms)
local tight_name, tight_remaining, tight_reset = limit_tightest()
return {'new', ticket, not_before, expires, string.format('%d', cancelled), tight_name,
  tight_remaining, tight_reset}
