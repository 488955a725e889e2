-- Trim the stream's oldest persisted entries, keeping the gateways' tail, while reading at
-- most 2 * ARGV[3] entries whatever the stream's length (a script blocks Redis while it runs).
-- KEYS: stream. ARGV: safe (the first unpersisted id: nothing from it on may go), tail (the
-- newest entries always kept), most (the read bound).
-- Returns {removed, more}; more is 1 when the bound stopped it with persisted entries beyond
-- the tail left (the caller trims again soon).
local length = redis.call('XLEN', KEYS[1])
local tail = tonumber(ARGV[2])
local most = tonumber(ARGV[3])
local excess = length - tail
if excess <= 0 then
  return {0, 0}
end
-- Few unpersisted entries (fewer than `most`, no more than the tail) all lie inside the tail,
-- so everything before the tail is persisted: trim to the tail however long the stream is.
-- This is the steady state, and XTRIM's cost is only that of what it frees.
local unpersisted = #redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', most)
if unpersisted < most and unpersisted <= tail then
  return {redis.call('XTRIM', KEYS[1], 'MAXLEN', tail), 0}
end
-- A backlog: the oldest entries below `safe`, at most `most`, never into the tail.
local below = #redis.call('XRANGE', KEYS[1], '-', '(' .. ARGV[1], 'COUNT', math.min(excess, most))
if below == 0 then
  return {0, 0}
end
local removed = redis.call('XTRIM', KEYS[1], 'MAXLEN', length - below)
if below == most and excess > below then
  return {removed, 1}
end
return {removed, 0}
