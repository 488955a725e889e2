-- Put a rebuilt board in place atomically, and keep the arrival counter ahead of it.
-- KEYS: staged board, staged members, staged names, board, members, names, seq
-- ARGV: highest seq in the rebuilt board, force (1 replaces a non-empty board, 0 refuses)
-- Returns 1 when swapped, 0 when refused (the staged keys are then deleted).
if ARGV[2] ~= '1' and redis.call('ZCARD', KEYS[4]) > 0 then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
  return 0
end
for i = 1, 3 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('RENAME', KEYS[i], KEYS[i + 3])
  else
    redis.call('DEL', KEYS[i + 3])
  end
end
-- Compare as strings of digits (exact beyond 2^53): longer is larger, then lexically.
local current = redis.call('GET', KEYS[7]) or '0'
local wanted = ARGV[1]
if #wanted > #current or (#wanted == #current and wanted > current) then
  redis.call('SET', KEYS[7], wanted)
end
return 1
