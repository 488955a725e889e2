-- Ban or unban a user, atomically with its stream event.
-- KEYS: board, members, names, banned, stream, banned periods, then (period board, period
--       members) per period slot
-- ARGV: 1 'ban'|'unban', 2 user_id, 3 event_id, 4 now_ms ('' = Redis TIME), 5 client_ip,
--       6 period slots P, then P x (board_id, period_id, expire_at_ms), then extra field pairs
-- Periodic boards follow the all-time one: a ban keeps each period's entry in the banned
-- periods hash, an unban puts back those whose period Redis still keeps.
-- A ban removes the user's entry and keeps it in `banned` as <score> BANNED_SEP <member>; an
-- unban puts that same entry back, so the user returns with the score and tie-break place
-- they had. Returns {'done', score} | {'unchanged', score}; score is '' for a user who never
-- scored.
local board, members, names, banned, stream = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local banned_periods, n_slots = KEYS[6], tonumber(ARGV[6])
local op, user = ARGV[1], ARGV[2]
local now_s = ARGV[4]
if now_s == '' then
  local t = redis.call('TIME')
  now_s = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
end

-- Each period slot j (0-based): its keys, and the field of its entry in the banned periods.
local function slot(j)
  local a = 7 + 3 * j
  return KEYS[7 + 2 * j], KEYS[8 + 2 * j],
    user .. BANNED_SEP .. ARGV[a] .. BANNED_SEP .. ARGV[a + 1], ARGV[a + 2]
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
  for j = 0, n_slots - 1 do
    local pboard, pmembers, field = slot(j)
    local pmember = redis.call('HGET', pmembers, user)
    local pstored = pmember and redis.call('ZSCORE', pboard, pmember)
    if pstored then
      redis.call('ZREM', pboard, pmember)
      redis.call('HDEL', pmembers, user)
      redis.call('HSET', banned_periods, field,
        string.format('%d', -tonumber(pstored)) .. BANNED_SEP .. pmember)
    end
  end
else
  if not saved then return {'unchanged', ''} end
  score = string.sub(saved, 1, sep - 1)
  local member = string.sub(saved, sep + #BANNED_SEP)
  if member ~= '' and score ~= '' then
    redis.call('ZADD', board, '-' .. score, member)
    redis.call('HSET', members, user, member)
  end
  redis.call('HDEL', banned, user)
  for j = 0, n_slots - 1 do
    local pboard, pmembers, field, expire_at = slot(j)
    local saved_p = redis.call('HGET', banned_periods, field)
    if saved_p then
      redis.call('HDEL', banned_periods, field)
      if tonumber(expire_at) > tonumber(now_s) then
        local at = string.find(saved_p, BANNED_SEP, 1, true)
        local pmember = string.sub(saved_p, at + #BANNED_SEP)
        redis.call('ZADD', pboard, '-' .. string.sub(saved_p, 1, at - 1), pmember)
        redis.call('HSET', pmembers, user, pmember)
        redis.call('PEXPIREAT', pboard, expire_at)
        redis.call('PEXPIREAT', pmembers, expire_at)
      end
    end
  end
end

local fields = {FIELD.version, EVENT_VERSION, FIELD.type, op, FIELD.event_id, ARGV[3],
  FIELD.user_id, user, FIELD.name, redis.call('HGET', names, user) or user, FIELD.action, op,
  FIELD.points, '0', FIELD.score, score == '' and '0' or score, FIELD.seq, '0',
  FIELD.idempotency_key, '', FIELD.ts, now_s, FIELD.client_ip, ARGV[5]}
for i = 7 + 3 * n_slots, #ARGV, 2 do
  fields[#fields + 1] = ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
end
redis.call('XADD', stream, '*', unpack(fields))
return {'done', score}
