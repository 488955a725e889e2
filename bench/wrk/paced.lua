-- Appended to a scenario for a paced run: each connection waits PACE_MS between requests.
-- (Debian's wrk has no constant-rate mode; the runner writes the value in.)
function delay()
  return PACE_MS
end
