-- Ban or unban a user, atomically with its stream event.
-- KEYS: board, members, names, banned, stream
-- ARGV: 1 'ban'|'unban', 2 user_id, 3 event_id, 4 now_ms, 5 client_ip, then extra field pairs
-- A ban removes the user's entry and keeps it in `banned` as '<score>|<member>'; an unban puts
-- that same entry back, so the user returns with the score and tie-break place they had.
-- Returns {'done', score} | {'unchanged', score}; score is '' for a user who never scored.
local board, members, names, banned, stream = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local op, user = ARGV[1], ARGV[2]
local saved = redis.call('HGET', banned, user)
local score = ''

if op == 'ban' then
  if saved then return {'unchanged', string.match(saved, '^([^|]*)|')} end
  local member = redis.call('HGET', members, user)
  if member then
    local stored = redis.call('ZSCORE', board, member)
    if stored then score = string.format('%d', -tonumber(stored)) end
    redis.call('ZREM', board, member)
    redis.call('HDEL', members, user)
  end
  redis.call('HSET', banned, user, score .. '|' .. (member or ''))
else
  if not saved then return {'unchanged', ''} end
  local member
  score, member = string.match(saved, '^([^|]*)|(.*)$')
  if member ~= '' and score ~= '' then
    redis.call('ZADD', board, '-' .. score, member)
    redis.call('HSET', members, user, member)
  end
  redis.call('HDEL', banned, user)
end

local fields = {'v', '1', 'type', op, 'event_id', ARGV[3], 'user_id', user,
  'name', redis.call('HGET', names, user) or user, 'action', op, 'points', '0',
  'score', score == '' and '0' or score, 'seq', '0', 'idempotency_key', '', 'ts', ARGV[4],
  'client_ip', ARGV[5]}
for i = 6, #ARGV, 2 do
  fields[#fields + 1] = ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
end
redis.call('XADD', stream, '*', unpack(fields))
return {'done', score}
