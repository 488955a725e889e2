-- Put one rebuilt period of a periodic board in place, with its expiry (persister rebuild).
-- KEYS: staged board, members, hidden board; live board, members, hidden board
-- ARGV: expire_at_ms
-- The live keys are UNLINKed (freed off the main thread), then replaced by the staged ones
-- that exist; a period without events ends up without keys, one without quarantined users'
-- events without a hidden board.
local n = #KEYS / 2
for i = 1, n do
  redis.call('UNLINK', KEYS[i + n])
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('RENAME', KEYS[i], KEYS[i + n])
    redis.call('PEXPIREAT', KEYS[i + n], ARGV[1])
  end
end
return 1
