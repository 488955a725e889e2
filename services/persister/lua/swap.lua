-- Put a rebuilt board in place atomically, and keep the arrival counter ahead of it.
-- KEYS: staged board, members, names, banned, hidden board, quarantined; the live keys in the
--       same order; seq
-- ARGV: highest seq in the rebuilt board, force (1 replaces a non-empty board, 0 refuses)
-- Returns 1 when swapped, 0 when refused (the staged keys are then deleted). A board is
-- non-empty when the board or the hidden board (quarantined users) has an entry.
-- Replaced keys are UNLINKed, never DELeted or renamed over: RENAME frees the old value in
-- place, and freeing a large board would block Redis; UNLINK hands it to a background thread.
local n = (#KEYS - 1) / 2
if ARGV[2] ~= '1' and redis.call('ZCARD', KEYS[n + 1]) + redis.call('ZCARD', KEYS[n + 5]) > 0 then
  for i = 1, n do
    redis.call('UNLINK', KEYS[i])
  end
  return 0
end
for i = 1, n do
  redis.call('UNLINK', KEYS[i + n])
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('RENAME', KEYS[i], KEYS[i + n])
  end
end
-- Compare as strings of digits (exact beyond 2^53): longer is larger, then lexically.
local current = redis.call('GET', KEYS[#KEYS]) or '0'
local wanted = ARGV[1]
if #wanted > #current or (#wanted == #current and wanted > current) then
  redis.call('SET', KEYS[#KEYS], wanted)
end
return 1
