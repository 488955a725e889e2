-- Read the top N of every board of the family in one round trip, with the stream position
-- and Redis's clock, consistent with each other (the gateway's one read per tick).
-- KEYS: names, stream, then one sorted set per board (all-time, or a period's)
-- ARGV: limit
-- Returns {last_stream_id ('0-0' when empty), now_ms, then per board: count, then count x
-- (member, score, name)}; scores as exact positive integers.
local limit = tonumber(ARGV[1])
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local t = redis.call('TIME')
local out = {last[1] and last[1][1] or '0-0',
  string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))}
for k = 3, #KEYS do
  local rows = redis.call('ZRANGE', KEYS[k], 0, limit - 1, 'WITHSCORES')
  out[#out + 1] = #rows / 2
  for i = 1, #rows, 2 do
    out[#out + 1] = rows[i]
    out[#out + 1] = string.format('%d', -tonumber(rows[i + 1]))
    out[#out + 1] = redis.call('HGET', KEYS[1], string.sub(rows[i], MEMBER_USER_AT)) or ''
  end
end
return out
