-- Library (prepended to award.lua and rank.lua): where a hidden (quarantined) entry would
-- stand on a public board.
-- The rank (1-based) that `member` with sorted-set score `stored` would have in `zset`
-- without being in it: the entries with a lower score, plus those with the same score whose
-- member sorts first. Members start with their unique, zero-padded arrival counter, so a
-- binary search over the equal-score run compares counters: O(log n) calls.
local function standing(zset, stored, member)
  local lo = redis.call('ZCOUNT', zset, '-inf', '(' .. stored)
  local hi = redis.call('ZCOUNT', zset, '-inf', stored)
  local seq = tonumber(string.sub(member, 1, SEQ_WIDTH))
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    local other = redis.call('ZRANGE', zset, mid, mid)[1]
    if tonumber(string.sub(other, 1, SEQ_WIDTH)) < seq then lo = mid + 1 else hi = mid end
  end
  return lo + 1
end
