-- Ban or unban a user, atomically with its stream event.
-- KEYS: board, members, names, banned, stream
-- ARGV: 1 'ban'|'unban', 2 user_id, 3 event_id, 4 now_ms ('' = Redis TIME), 5 client_ip,
--       then extra field pairs
-- A ban removes the user's entry and keeps it in `banned` as <score> BANNED_SEP <member>; an
-- unban puts that same entry back, so the user returns with the score and tie-break place
-- they had. Returns {'done', score} | {'unchanged', score}; score is '' for a user who never
-- scored.
local board, members, names, banned, stream = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local op, user = ARGV[1], ARGV[2]
local now_s = ARGV[4]
if now_s == '' then
  local t = redis.call('TIME')
  now_s = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
end
local saved = redis.call('HGET', banned, user)
local score = ''
local sep = string.find(saved or '', BANNED_SEP, 1, true)

if op == TYPE.ban then
  if saved then return {'unchanged', string.sub(saved, 1, sep - 1)} end
  local member = redis.call('HGET', members, user)
  if member then
    local stored = redis.call('ZSCORE', board, member)
    if stored then score = string.format('%d', -tonumber(stored)) end
    redis.call('ZREM', board, member)
    redis.call('HDEL', members, user)
  end
  redis.call('HSET', banned, user, score .. BANNED_SEP .. (member or ''))
else
  if not saved then return {'unchanged', ''} end
  score = string.sub(saved, 1, sep - 1)
  local member = string.sub(saved, sep + #BANNED_SEP)
  if member ~= '' and score ~= '' then
    redis.call('ZADD', board, '-' .. score, member)
    redis.call('HSET', members, user, member)
  end
  redis.call('HDEL', banned, user)
end

local fields = {FIELD.version, EVENT_VERSION, FIELD.type, op, FIELD.event_id, ARGV[3],
  FIELD.user_id, user, FIELD.name, redis.call('HGET', names, user) or user, FIELD.action, op,
  FIELD.points, '0', FIELD.score, score == '' and '0' or score, FIELD.seq, '0',
  FIELD.idempotency_key, '', FIELD.ts, now_s, FIELD.client_ip, ARGV[5]}
for i = 6, #ARGV, 2 do
  fields[#fields + 1] = ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
end
redis.call('XADD', stream, '*', unpack(fields))
return {'done', score}
