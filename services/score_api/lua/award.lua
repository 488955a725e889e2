-- Award points for one action, atomically: idempotency, score, tie-break, name, stream event.
-- KEYS: board, members, names, seq, stream, idempotency
-- ARGV: user_id, name, action, points, event_id, idempotency_key, ts_ms, client_ip,
--       idempotency_ttl_s, then optional extra event field/value pairs.
-- Returns {status, action, awarded, score, rank, event_id, name}; status is one of
-- 'new', 'duplicate' (same key, same action: the stored result), 'conflict' (same key,
-- other action: the stored result), 'overflow' (the score would leave the exact range).
local board, members, names, seqkey, stream, idem = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local user, name, action = ARGV[1], ARGV[2], ARGV[3]

local prior = redis.call('HMGET', idem, 'action', 'awarded', 'score', 'rank', 'event_id', 'name')
if prior[1] then
  local status = 'duplicate'
  if prior[1] ~= action then status = 'conflict' end
  return {status, prior[1], prior[2], prior[3], prior[4], prior[5], prior[6]}
end

local points = tonumber(ARGV[4])
local score = 0
local old = redis.call('HGET', members, user)
if old then
  local stored = redis.call('ZSCORE', board, old)
  if stored then score = -tonumber(stored) end
end
score = score + points
if score > 9007199254740991 then
  return {'overflow', action, '0', '0', '0', '', name}
end
if old then redis.call('ZREM', board, old) end

local seq = redis.call('INCR', seqkey)
local member = string.format('%016d', seq) .. ':' .. user
-- string.format, not tostring: Lua would print large numbers in exponent form.
local score_s = string.format('%d', score)
redis.call('ZADD', board, '-' .. score_s, member)
redis.call('HSET', members, user, member)
redis.call('HSET', names, user, name)
local rank = redis.call('ZRANK', board, member) + 1

local fields = {'v', '1', 'type', 'score', 'event_id', ARGV[5], 'user_id', user, 'name', name,
  'action', action, 'points', ARGV[4], 'score', score_s, 'seq', string.format('%d', seq),
  'idempotency_key', ARGV[6], 'ts', ARGV[7], 'client_ip', ARGV[8]}
for i = 10, #ARGV, 2 do
  fields[#fields + 1] = ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
end
redis.call('XADD', stream, '*', unpack(fields))

local rank_s = string.format('%d', rank)
redis.call('HSET', idem, 'action', action, 'awarded', ARGV[4], 'score', score_s, 'rank', rank_s,
  'event_id', ARGV[5], 'name', name)
redis.call('EXPIRE', idem, ARGV[9])
return {'new', action, ARGV[4], score_s, rank_s, ARGV[5], name}
