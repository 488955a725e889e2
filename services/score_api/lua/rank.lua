-- One user's rank and up to ARGV[2] neighbours on each side, in one round trip.
-- KEYS: board, names, members[, hidden board]    ARGV: user_id, around
-- Returns {} when the user is unranked, else {first_rank, member1, score1, name1, ...}.
-- With the hidden board (the user asking about themself, GET /api/me), a quarantined user
-- gets their own entry alone, at the rank they would have on the board (standing.lua).
local member = redis.call('HGET', KEYS[3], ARGV[1])
if not member then return {} end
local rank = redis.call('ZRANK', KEYS[1], member)
if not rank then
  local stored = KEYS[4] and redis.call('ZSCORE', KEYS[4], member)
  if not stored then return {} end
  return {standing(KEYS[1], stored, member), member, string.format('%d', -tonumber(stored)),
    redis.call('HGET', KEYS[2], ARGV[1]) or ''}
end
local around = tonumber(ARGV[2])
local first = rank - around
if first < 0 then first = 0 end
local rows = redis.call('ZRANGE', KEYS[1], first, rank + around, 'WITHSCORES')
local out = {first + 1}
for i = 1, #rows, 2 do
  local m = rows[i]
  out[#out + 1] = m
  out[#out + 1] = string.format('%d', -tonumber(rows[i + 1]))
  out[#out + 1] = redis.call('HGET', KEYS[2], string.sub(m, MEMBER_USER_AT)) or ''
end
return out
