-- Put one rebuilt period of a periodic board in place, with its expiry (persister rebuild).
-- KEYS: staged board, staged members, live board, live members    ARGV: expire_at_ms
-- The live keys are UNLINKed (freed off the main thread), then replaced by the staged ones
-- when there are any; a period without events ends up without keys.
redis.call('UNLINK', KEYS[3], KEYS[4])
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('RENAME', KEYS[1], KEYS[3])
  redis.call('RENAME', KEYS[2], KEYS[4])
  redis.call('PEXPIREAT', KEYS[3], ARGV[1])
  redis.call('PEXPIREAT', KEYS[4], ARGV[1])
end
return 1
