-- Put a rebuilt board in place atomically, and keep the arrival counter ahead of it.
-- KEYS: staged board, members, names, banned; live board, members, names, banned; seq
-- ARGV: highest seq in the rebuilt board, force (1 replaces a non-empty board, 0 refuses)
-- Returns 1 when swapped, 0 when refused (the staged keys are then deleted).
-- Replaced keys are UNLINKed, never DELeted or renamed over: RENAME frees the old value in
-- place, and freeing a large board would block Redis; UNLINK hands it to a background thread.
if ARGV[2] ~= '1' and redis.call('ZCARD', KEYS[5]) > 0 then
  redis.call('UNLINK', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
  return 0
end
for i = 1, 4 do
  redis.call('UNLINK', KEYS[i + 4])
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('RENAME', KEYS[i], KEYS[i + 4])
  end
end
-- Compare as strings of digits (exact beyond 2^53): longer is larger, then lexically.
local current = redis.call('GET', KEYS[9]) or '0'
local wanted = ARGV[1]
if #wanted > #current or (#wanted == #current and wanted > current) then
  redis.call('SET', KEYS[9], wanted)
end
return 1
