-- Apply a revocation recorded in PostgreSQL (services.score_api.revocations), once, with its
-- stream event.
-- KEYS: 1 board, 2 members, 3 hidden board, 4 banned, 5 banned periods, 6 revocations,
--       7 stream, 8 names, then (period board, period members, hidden period board) per slot
-- ARGV: 1 user_id, 2 revocation_id, 3 event_id, 4 now_ms ('' = Redis TIME), 5 client_ip,
--       6 up_to_seq, 7 all-time points removed, 8 all-time last kept seq, 9 slots P, then
--       P x (board_id, period_id, points removed, last kept seq), then extra field pairs
-- Wherever the user's entry is (the board, the hidden board of a quarantine, or kept aside by
-- a ban), its score drops by the points removed; an entry left with nothing goes. The
-- tie-break becomes the time the user reached the remaining score: when no event after the
-- revocation's start came since (the member's counter is at most up_to_seq), the member
-- takes the counter of the user's last remaining event (last kept seq). A revocation id is
-- applied once (`revocations`). Returns {'done'|'duplicate', all-time score}.
local board, members, hidden, banned = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local banned_periods, applied, stream, names = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local user, up_to = ARGV[1], tonumber(ARGV[6])
local now_s = ARGV[4]
if now_s == '' then
  local t = redis.call('TIME')
  now_s = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
end

local function member_after(member, last_kept)
  local seq = tonumber(string.sub(member, 1, SEQ_WIDTH))
  if seq > up_to or last_kept == 0 or last_kept >= seq then return member end
  return string.format(MEMBER_FORMAT, last_kept) .. user
end

-- The entry in sorted set `zset` (found through `members_key`): revised in place; returns
-- the new score, or nil when the entry is not there.
local function revise_set(zset, members_key, points, last_kept)
  local member = redis.call('HGET', members_key, user)
  local stored = member and redis.call('ZSCORE', zset, member)
  if not stored then return nil end
  local score = -tonumber(stored) - points
  if score <= 0 then
    redis.call('ZREM', zset, member)
    redis.call('HDEL', members_key, user)
    return 0
  end
  local revised = member_after(member, last_kept)
  -- Add before removing: the set never empties, so a period's expiry stays.
  redis.call('ZADD', zset, string.format('%d', -score), revised)
  if revised ~= member then
    redis.call('ZREM', zset, member)
    redis.call('HSET', members_key, user, revised)
  end
  return score
end

-- An entry a ban keeps aside as <score> BANNED_SEP <member> in hash field `field`.
local function revise_saved(hash, field, points, last_kept)
  local saved = redis.call('HGET', hash, field)
  if not saved then return nil end
  local sep = string.find(saved, BANNED_SEP, 1, true)
  local had, member = string.sub(saved, 1, sep - 1), string.sub(saved, sep + #BANNED_SEP)
  if had == '' or member == '' then return 0 end
  local score = tonumber(had) - points
  if score <= 0 then
    redis.call('HSET', hash, field, BANNED_SEP)
    return 0
  end
  redis.call('HSET', hash, field,
    string.format('%d', score) .. BANNED_SEP .. member_after(member, last_kept))
  return score
end

local function current()
  local member = redis.call('HGET', members, user)
  local stored = member and (redis.call('ZSCORE', board, member)
    or redis.call('ZSCORE', hidden, member))
  if stored then return -tonumber(stored) end
  local saved = redis.call('HGET', banned, user)
  local had = saved and string.sub(saved, 1, string.find(saved, BANNED_SEP, 1, true) - 1)
  return tonumber(had ~= '' and had or '0') or 0
end

if redis.call('HSETNX', applied, ARGV[2], now_s) == 0 then
  return {'duplicate', string.format('%d', current())}
end

local points, last_kept = tonumber(ARGV[7]), tonumber(ARGV[8])
local score = 0
if points > 0 then
  score = revise_set(board, members, points, last_kept)
    or revise_set(hidden, members, points, last_kept)
    or revise_saved(banned, user, points, last_kept) or 0
else
  score = current()
end
local n_slots = tonumber(ARGV[9])
for j = 0, n_slots - 1 do
  local a = 10 + 4 * j
  local ppoints, plast = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local pboard, pmembers, phidden = KEYS[9 + 3 * j], KEYS[10 + 3 * j], KEYS[11 + 3 * j]
  if ppoints > 0 then
    local field = user .. BANNED_SEP .. ARGV[a] .. BANNED_SEP .. ARGV[a + 1]
    local _ = revise_set(pboard, pmembers, ppoints, plast)
      or revise_set(phidden, pmembers, ppoints, plast)
      or revise_saved(banned_periods, field, ppoints, plast)
  end
end

local score_s = string.format('%d', score)
local fields = {FIELD.version, EVENT_VERSION, FIELD.type, TYPE.revoke, FIELD.event_id, ARGV[3],
  FIELD.user_id, user, FIELD.name, redis.call('HGET', names, user) or user,
  FIELD.action, TYPE.revoke, FIELD.points, '0', FIELD.score, score_s, FIELD.seq, '0',
  FIELD.idempotency_key, '', FIELD.ts, now_s, FIELD.client_ip, ARGV[5],
  FIELD.revocation, ARGV[2]}
for i = 10 + 4 * n_slots, #ARGV, 2 do
  fields[#fields + 1] = ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
end
redis.call('XADD', stream, '*', unpack(fields))
return {'done', score_s}
