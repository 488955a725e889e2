-- Award points for one action, atomically: address limits, idempotency, ban, user limits,
-- cooldown, score, tie-break, name and stream event. Nothing is written unless the request is
-- answered (a new award or a replay); a refusal consumes nothing.
-- KEYS: board, members, names, seq, stream, idempotency, banned, cooldown, then one rate key
--       per limit (address limits first)
-- ARGV: 1 user_id, 2 name, 3 action, 4 points, 5 event_id, 6 idempotency_key,
--       7 now_ms ('' = Redis TIME, the clock every replica shares), 8 client_ip,
--       9 idempotency_ttl_s, 10 cooldown_ms, 11 address limits A, 12 user limits U,
--       then (A + U) x (name, quota, window_ms), then optional extra event field/value pairs.
-- Returns one of
--   {'new'|'duplicate'|'conflict', action, awarded, score, rank, event_id, name,
--    tightest_limit, remaining, reset_ms}  (limit fields only for 'new')
--   {'limited', limit_name, wait_ms} | {'cooldown', action, wait_ms} | {'banned'}
--   {'overflow'}
-- GCRA arithmetic: tests/models.py holds the reference it is tested against.
local board, members, names, seqkey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local stream, idem, banned, cooldown = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local user, name, action = ARGV[1], ARGV[2], ARGV[3]
local now_ms
if ARGV[7] ~= '' then
  now_ms = tonumber(ARGV[7])
else
  local t = redis.call('TIME')
  now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local now_s = string.format('%d', now_ms)
local now = now_ms * 1000  -- limits work in integer microseconds
local n_ip, n_user = tonumber(ARGV[11]), tonumber(ARGV[12])

local new_tats = {}
local tight_name, tight_remaining, tight_reset = '', -1, 0
-- Decide limit i without writing it; nil and a refusal when it would be exceeded.
local function check(i)
  local lname = ARGV[10 + 3 * i]
  local quota = tonumber(ARGV[11 + 3 * i])
  local window = tonumber(ARGV[12 + 3 * i]) * 1000
  local interval = math.floor(window / quota)
  local tat = tonumber(redis.call('GET', KEYS[8 + i]) or now)
  if tat < now then tat = now end
  local new_tat = tat + interval
  local allow_at = new_tat - window
  if now < allow_at then
    return {'limited', lname, string.format('%d', math.ceil((allow_at - now) / 1000))}
  end
  new_tats[i] = new_tat
  local remaining = math.floor((window - (new_tat - now)) / interval)
  if tight_remaining < 0 or remaining < tight_remaining then
    tight_name, tight_remaining, tight_reset = lname, remaining, new_tat - now
  end
  return nil
end
local function consume(first, last)
  for i = first, last do
    local ttl = math.ceil((new_tats[i] - now) / 1000)
    redis.call('SET', KEYS[8 + i], string.format('%d', new_tats[i]), 'PX', ttl)
  end
end

-- Every request counts against its address, replays included: replaying one key must not
-- be a way to hammer Redis.
for i = 1, n_ip do
  local refused = check(i)
  if refused then return refused end
end

local prior = redis.call('HMGET', idem, 'action', 'awarded', 'score', 'rank', 'event_id', 'name')
if prior[1] then
  consume(1, n_ip)
  local status = 'duplicate'
  if prior[1] ~= action then status = 'conflict' end
  return {status, prior[1], prior[2], prior[3], prior[4], prior[5], prior[6]}
end

if redis.call('HEXISTS', banned, user) == 1 then return {'banned'} end

for i = n_ip + 1, n_ip + n_user do
  local refused = check(i)
  if refused then return refused end
end

local cooldown_ms = tonumber(ARGV[10])
if cooldown_ms > 0 then
  local left = redis.call('PTTL', cooldown)
  if left > 0 then return {'cooldown', action, string.format('%d', left)} end
end

local points = tonumber(ARGV[4])
local score = 0
local old = redis.call('HGET', members, user)
if old then
  local stored = redis.call('ZSCORE', board, old)
  if stored then score = -tonumber(stored) end
end
score = score + points
if score > MAX_SCORE then return {'overflow'} end

consume(1, n_ip + n_user)
if cooldown_ms > 0 then redis.call('SET', cooldown, '1', 'PX', cooldown_ms) end
if old then redis.call('ZREM', board, old) end

local seq = redis.call('INCR', seqkey)
local member = string.format(MEMBER_FORMAT, seq) .. user
-- string.format, not tostring: Lua would print large numbers in exponent form.
local score_s = string.format('%d', score)
redis.call('ZADD', board, '-' .. score_s, member)
redis.call('HSET', members, user, member)
redis.call('HSET', names, user, name)
local rank_s = string.format('%d', redis.call('ZRANK', board, member) + 1)

local fields = {FIELD.version, EVENT_VERSION, FIELD.type, TYPE.score, FIELD.event_id, ARGV[5],
  FIELD.user_id, user, FIELD.name, name, FIELD.action, action, FIELD.points, ARGV[4],
  FIELD.score, score_s, FIELD.seq, string.format('%d', seq),
  FIELD.idempotency_key, ARGV[6], FIELD.ts, now_s, FIELD.client_ip, ARGV[8]}
for i = 13 + 3 * (n_ip + n_user), #ARGV, 2 do
  fields[#fields + 1] = ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
end
redis.call('XADD', stream, '*', unpack(fields))

redis.call('HSET', idem, 'action', action, 'awarded', ARGV[4], 'score', score_s, 'rank', rank_s,
  'event_id', ARGV[5], 'name', name)
redis.call('EXPIRE', idem, ARGV[9])
return {'new', action, ARGV[4], score_s, rank_s, ARGV[5], name, tight_name,
  string.format('%d', math.max(tight_remaining, 0)),
  string.format('%d', math.ceil(tight_reset / 1000))}
