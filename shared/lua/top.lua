-- Read a page of the board in one round trip, consistent with itself.
-- KEYS: board, names[, stream]    ARGV: offset, limit
-- Returns {total, member1, score1, name1, member2, ...}; scores as exact positive integers.
-- With the stream key the reply starts with the stream's last entry ID ('0-0' when empty),
-- read in the same atomic step: the page is the board exactly as of that entry.
local offset = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local total = redis.call('ZCARD', KEYS[1])
local out = {total}
if KEYS[3] then
  local last = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
  out = {last[1] and last[1][1] or '0-0', total}
end
if limit <= 0 then return out end
local rows = redis.call('ZRANGE', KEYS[1], offset, offset + limit - 1, 'WITHSCORES')
for i = 1, #rows, 2 do
  local member = rows[i]
  local user = string.sub(member, MEMBER_USER_AT)
  out[#out + 1] = member
  out[#out + 1] = string.format('%d', -tonumber(rows[i + 1]))
  out[#out + 1] = redis.call('HGET', KEYS[2], user) or ''
end
return out
