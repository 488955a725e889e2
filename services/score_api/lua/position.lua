-- Where the board stands, in one atomic step: the arrival counter (every award so far has a
-- seq at most this) and the stream's last entry id ('0-0' when empty; each of those awards'
-- events is at or before it).
-- KEYS: seq, stream    Returns {seq, last stream id}
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
return {redis.call('GET', KEYS[1]) or '0', last[1] and last[1][1] or '0-0'}
