-- Award points for one action, atomically: address limits, idempotency, ban, ticket, user
-- limits and points budgets, cooldown, daily cap, score, tie-break, name and stream event.
-- Nothing is written unless the request is answered (a new award or a replay); a refusal
-- consumes nothing, and a ticket refused as too early stays usable.
-- KEYS: 1 board, 2 members, 3 names, 4 seq, 5 stream, 6 idempotency, 7 banned, 8 cooldown,
--       9 daily count, 10 ticket, 11 open tickets, 12 quarantined, 13 hidden board, then one
--       key per limit (address first), then (period board, period members, hidden period
--       board) per period candidate
-- A quarantined user's award scores on the hidden sorted sets (moderate.lua); the answer
-- gives the rank they would have on the public ones, so it reads as any other.
-- ARGV: 1 user_id, 2 name ('' = keep the stored one), 3 action, 4 points, 5 event_id,
--       6 idempotency_key, 7 now_ms ('' = Redis TIME), 8 client_ip, 9 idempotency_ttl_s,
--       10 cooldown_ms, 11 max_per_day (0 = no cap), 12 ticket ('' = none),
--       13 address limits A, 14 user limits U, 15 period candidates N,
--       then (A + U) x (name, quota, window_ms, cost),
--       then N x (board_id, period_id, start_ms, end_ms, expire_at_ms), grouped by board:
--       the periods the API's clock makes possible; the one holding Redis's TIME is the
--       award's period,
--       then extra event field/value pairs.
-- Returns one of
--   {'new'|'duplicate'|'conflict', action, awarded, score, rank, event_id, name,
--    boards, tightest_limit, remaining, reset_ms}  (limit fields only for 'new'; boards:
--    'board_id period_id score rank ...' of the periodic boards, space-separated)
--   {'limited', limit_name, wait_ms} | {'cooldown', action, wait_ms} |
--   {'daily-cap', action, wait_ms} | {'banned'} | {'overflow'} |
--   {'ticket-invalid'} | {'ticket-used'} | {'too-early', wait_ms} | {'clock-skew'}
local board, members, names, seqkey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local stream, idem, banned, cooldown = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local daily, ticket_key, open_tickets = KEYS[9], KEYS[10], KEYS[11]
local quarantined, hidden_board = KEYS[12], KEYS[13]
local user, name, action, ticket = ARGV[1], ARGV[2], ARGV[3], ARGV[12]
local now_ms = clock_ms(ARGV[7])
local n_ip, n_user = tonumber(ARGV[13]), tonumber(ARGV[14])
local n_candidates = tonumber(ARGV[15])
LIMITS.key_at, LIMITS.arg_at, LIMITS.now = 13, 15, now_ms * 1000
local period_arg = 16 + 4 * (n_ip + n_user)
local period_key = 14 + n_ip + n_user

-- Every request counts against its address, replays included: replaying one key must not
-- be a way to hammer Redis.
local refused = limits_check(1, n_ip)
if refused then return refused end

local prior = redis.call('HMGET', idem, 'action', 'awarded', 'score', 'rank', 'event_id', 'name',
  'boards')
if prior[1] then
  limit_consume(1, n_ip)
  local status = 'duplicate'
  if prior[1] ~= action then status = 'conflict' end
  return {status, prior[1], prior[2], prior[3], prior[4], prior[5], prior[6], prior[7] or ''}
end

if redis.call('HEXISTS', banned, user) == 1 then return {'banned'} end

-- The ticket: this user's, for this action, unexpired, not redeemed, not cancelled (still in
-- the open set), and old enough (services.score_api.tickets holds the model of these rules).
local started
if ticket ~= '' then
  local t = redis.call('HMGET', ticket_key, 'user', 'action', 'started', 'not_before',
    'expires', 'state')
  if t[1] ~= user or t[2] ~= action or now_ms >= tonumber(t[5]) then
    return {'ticket-invalid'}
  end
  if t[6] ~= TICKET_STATE.open then return {'ticket-used'} end
  if not redis.call('ZSCORE', open_tickets, ticket) then return {'ticket-invalid'} end
  if now_ms < tonumber(t[4]) then
    return {'too-early', string.format('%d', tonumber(t[4]) - now_ms)}
  end
  started = tonumber(t[3])
end

refused = limits_check(n_ip + 1, n_ip + n_user)
if refused then return refused end

local cooldown_ms = tonumber(ARGV[10])
if cooldown_ms > 0 then
  local left = redis.call('PTTL', cooldown)
  if left > 0 then return {'cooldown', action, string.format('%d', left)} end
end

-- The daily cap counts completions per UTC day: '<day number>:<count>', gone at midnight.
local max_per_day = tonumber(ARGV[11])
local day = math.floor(now_ms / 86400000)
local done_today = 0
if max_per_day > 0 then
  local stored = redis.call('GET', daily)
  if stored then
    local sep = string.find(stored, ':', 1, true)
    if tonumber(string.sub(stored, 1, sep - 1)) == day then
      done_today = tonumber(string.sub(stored, sep + 1))
    end
  end
  if done_today >= max_per_day then
    return {'daily-cap', action, string.format('%d', (day + 1) * 86400000 - now_ms)}
  end
end

-- Each periodic board's period: of its candidates (consecutive, one board_id), the one
-- holding now. A board with none means the API's clock is further off than its candidates
-- reach: refuse rather than guess.
local periods = {}
local boards_seen, last_board = 0, nil
for j = 0, n_candidates - 1 do
  local a = period_arg + 5 * j
  if ARGV[a] ~= last_board then boards_seen, last_board = boards_seen + 1, ARGV[a] end
  local holds = tonumber(ARGV[a + 2]) <= now_ms and now_ms < tonumber(ARGV[a + 3])
  if holds and #periods < boards_seen then periods[#periods + 1] = j end
end
if #periods ~= boards_seen then return {'clock-skew'} end

local hidden = redis.call('HEXISTS', quarantined, user) == 1
local ranked_on = board
if hidden then ranked_on = hidden_board end
local points = tonumber(ARGV[4])
local score = 0
local old = redis.call('HGET', members, user)
if old then
  local stored = redis.call('ZSCORE', ranked_on, old)
  if stored then score = -tonumber(stored) end
end
score = score + points
if score > MAX_SCORE then return {'overflow'} end

limit_consume(1, n_ip + n_user)
if cooldown_ms > 0 then redis.call('SET', cooldown, '1', 'PX', cooldown_ms) end
if max_per_day > 0 then
  redis.call('SET', daily, string.format('%d:%d', day, done_today + 1),
    'PXAT', string.format('%d', (day + 1) * 86400000))
end
if old then redis.call('ZREM', ranked_on, old) end
if name == '' then name = redis.call('HGET', names, user) or user end

local seq = redis.call('INCR', seqkey)
local member = string.format(MEMBER_FORMAT, seq) .. user
-- string.format, not tostring: Lua would print large numbers in exponent form.
local score_s = string.format('%d', score)
redis.call('ZADD', ranked_on, '-' .. score_s, member)
redis.call('HSET', members, user, member)
redis.call('HSET', names, user, name)
-- The rank on the public board: the entry's own, or the one it would have there.
local function rank_of(zset, public, stored)
  if zset == public then return redis.call('ZRANK', zset, member) + 1 end
  return standing(public, stored, member)
end
local rank_s = string.format('%d', rank_of(ranked_on, board, '-' .. score_s))

-- The same award in each period: the same member, so the same arrival tie-break.
local on_boards, counted_in = {}, {}
for _, j in ipairs(periods) do
  local a = period_arg + 5 * j
  counted_in[#counted_in + 1] = ARGV[a] .. PERIOD_SEP .. ARGV[a + 1]
  local pboard, pmembers = KEYS[period_key + 3 * j], KEYS[period_key + 3 * j + 1]
  local public = pboard
  if hidden then pboard = KEYS[period_key + 3 * j + 2] end
  local pscore = points
  local pold = redis.call('HGET', pmembers, user)
  if pold then
    local stored = redis.call('ZSCORE', pboard, pold)
    if stored then pscore = pscore - tonumber(stored) end
    redis.call('ZREM', pboard, pold)
  end
  local pscore_s = string.format('%d', pscore)
  redis.call('ZADD', pboard, '-' .. pscore_s, member)
  redis.call('HSET', pmembers, user, member)
  on_boards[#on_boards + 1] = ARGV[a] .. ' ' .. ARGV[a + 1] .. ' ' .. pscore_s .. ' ' ..
    string.format('%d', rank_of(pboard, public, '-' .. pscore_s))
  -- Kept for the retained periods after this one, then gone (BOARD_RETENTION_PERIODS):
  -- set once, when this award made the period's keys.
  if redis.call('ZCARD', pboard) == 1 then
    redis.call('PEXPIREAT', pboard, ARGV[a + 4])
    redis.call('PEXPIREAT', pmembers, ARGV[a + 4])
  end
end
local boards_s = table.concat(on_boards, ' ')

local fields = {FIELD.version, EVENT_VERSION, FIELD.type, TYPE.score, FIELD.event_id, ARGV[5],
  FIELD.user_id, user, FIELD.name, name, FIELD.action, action, FIELD.points, ARGV[4],
  FIELD.score, score_s, FIELD.seq, string.format('%d', seq),
  FIELD.idempotency_key, ARGV[6], FIELD.ts, string.format('%d', now_ms),
  FIELD.client_ip, ARGV[8], FIELD.periods, table.concat(counted_in, ' ')}
if started then
  redis.call('HSET', ticket_key, 'state', TICKET_STATE.redeemed)
  redis.call('ZREM', open_tickets, ticket)
  fields[#fields + 1] = FIELD.ticket
  fields[#fields + 1] = ticket
  fields[#fields + 1] = FIELD.duration_ms
  fields[#fields + 1] = string.format('%d', now_ms - started)
end
for i = period_arg + 5 * n_candidates, #ARGV, 2 do
  fields[#fields + 1] = ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
end
redis.call('XADD', stream, '*', unpack(fields))

redis.call('HSET', idem, 'action', action, 'awarded', ARGV[4], 'score', score_s, 'rank', rank_s,
  'event_id', ARGV[5], 'name', name, 'boards', boards_s)
redis.call('EXPIRE', idem, ARGV[9])
local tight_name, tight_remaining, tight_reset = limit_tightest()
return {'new', action, ARGV[4], score_s, rank_s, ARGV[5], name, boards_s, tight_name,
  tight_remaining, tight_reset}
