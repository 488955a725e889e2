-- Ban, unban, quarantine or release a user, atomically with its stream event
-- (shared.moderation holds the state table this follows; shared.moderator calls it).
-- KEYS: 1 board, 2 members, 3 names, 4 banned, 5 stream, 6 banned periods, 7 quarantined,
--       8 hidden board, then (period board, period members, hidden period board) per slot
-- ARGV: 1 'ban'|'unban'|'quarantine'|'release', 2 user_id, 3 event_id, 4 now_ms ('' = Redis
--       TIME), 5 client_ip, 6 period slots P, then P x (board_id, period_id, expire_at_ms),
--       then extra field pairs
-- Periodic boards follow the all-time one.
-- - A ban removes the user's entry (from the board, or the hidden board if quarantined: a
--   ban ends a quarantine) and keeps it in `banned` as <score> BANNED_SEP <member>, and
--   each period's in the banned periods hash; an unban puts those same entries back on the
--   public boards (a period's only while Redis still keeps it), so the user returns with
--   the score and tie-break place they had.
-- - A quarantine moves the entries to the hidden sorted sets, the same members with the same
--   scores, where awards keep scoring; a release moves them back. A banned user cannot be
--   quarantined (a quarantine must never undo a ban).
-- Returns {'done'|'unchanged'|'refused', score, state}: score is '' for a user who never
-- scored, state the user's state after the call ('active', 'quarantined', 'banned').
local board, members, names, banned, stream = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local banned_periods, quarantined, hidden = KEYS[6], KEYS[7], KEYS[8]
local n_slots = tonumber(ARGV[6])
local op, user = ARGV[1], ARGV[2]
local now_s = ARGV[4]
if now_s == '' then
  local t = redis.call('TIME')
  now_s = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
end

-- Each period slot j (0-based): its keys, the field of its entry in the banned periods, and
-- when its keys expire.
local function slot(j)
  local a = 7 + 3 * j
  return KEYS[9 + 3 * j], KEYS[10 + 3 * j], KEYS[11 + 3 * j],
    user .. BANNED_SEP .. ARGV[a] .. BANNED_SEP .. ARGV[a + 1], ARGV[a + 2]
end

-- Move the user's entry from one sorted set to another, keeping member and score; the
-- destination expires at `expire_at` when given (a period's). Returns the score or nil.
local function move(from, to, members_key, expire_at)
  local member = redis.call('HGET', members_key, user)
  local stored = member and redis.call('ZSCORE', from, member)
  if not stored then return nil end
  redis.call('ZADD', to, stored, member)
  redis.call('ZREM', from, member)
  if expire_at and tonumber(expire_at) > tonumber(now_s) then
    redis.call('PEXPIREAT', to, expire_at)
  end
  return string.format('%d', -tonumber(stored))
end

local saved = redis.call('HGET', banned, user)
local is_quarantined = redis.call('HEXISTS', quarantined, user) == 1
local state = 'active'
if saved then state = 'banned' elseif is_quarantined then state = 'quarantined' end
local score = ''

-- The user's all-time score wherever it is ('' if none).
local function current_score()
  if saved then
    return string.sub(saved, 1, string.find(saved, BANNED_SEP, 1, true) - 1)
  end
  local member = redis.call('HGET', members, user)
  local stored = member and (redis.call('ZSCORE', board, member)
    or redis.call('ZSCORE', hidden, member))
  return stored and string.format('%d', -tonumber(stored)) or ''
end

if op == TYPE.ban then
  if saved then return {'unchanged', current_score(), state} end
  local source = is_quarantined and hidden or board
  local member = redis.call('HGET', members, user)
  if member then
    local stored = redis.call('ZSCORE', source, member)
    if stored then score = string.format('%d', -tonumber(stored)) end
    redis.call('ZREM', source, member)
    redis.call('HDEL', members, user)
  end
  redis.call('HSET', banned, user, score .. BANNED_SEP .. (member or ''))
  redis.call('HDEL', quarantined, user)
  for j = 0, n_slots - 1 do
    local pboard, pmembers, phidden, field = slot(j)
    local psource = is_quarantined and phidden or pboard
    local pmember = redis.call('HGET', pmembers, user)
    local pstored = pmember and redis.call('ZSCORE', psource, pmember)
    if pstored then
      redis.call('ZREM', psource, pmember)
      redis.call('HDEL', pmembers, user)
      redis.call('HSET', banned_periods, field,
        string.format('%d', -tonumber(pstored)) .. BANNED_SEP .. pmember)
    end
  end
  state = 'banned'
elseif op == TYPE.unban then
  if not saved then return {'unchanged', current_score(), state} end
  local sep = string.find(saved, BANNED_SEP, 1, true)
  score = string.sub(saved, 1, sep - 1)
  local member = string.sub(saved, sep + #BANNED_SEP)
  if member ~= '' and score ~= '' then
    redis.call('ZADD', board, '-' .. score, member)
    redis.call('HSET', members, user, member)
  end
  redis.call('HDEL', banned, user)
  for j = 0, n_slots - 1 do
    local pboard, pmembers, _, field, expire_at = slot(j)
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
  state = 'active'
elseif op == TYPE.quarantine then
  if saved then return {'refused', current_score(), state} end
  if is_quarantined then return {'unchanged', current_score(), state} end
  score = move(board, hidden, members) or ''
  redis.call('HSET', quarantined, user, now_s)
  for j = 0, n_slots - 1 do
    local pboard, pmembers, phidden, _, expire_at = slot(j)
    move(pboard, phidden, pmembers, expire_at)
  end
  state = 'quarantined'
elseif op == TYPE.release then
  if not is_quarantined then return {'unchanged', current_score(), state} end
  score = move(hidden, board, members) or ''
  redis.call('HDEL', quarantined, user)
  for j = 0, n_slots - 1 do
    local pboard, pmembers, phidden, _, expire_at = slot(j)
    move(phidden, pboard, pmembers, expire_at)
  end
  state = 'active'
else
  return redis.error_reply('unknown moderation action')
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
return {'done', score, state}
