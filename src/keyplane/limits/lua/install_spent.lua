-- Install a budget counter read from the ledger, unless one is live already: of several
-- instances seeding the same counter at once, the first wins and the others change nothing.
-- KEYS: the spent counter, the key's set of counters. ARGV: spent, the counter's member in
-- that set, when the counter may go (unix ms; '' for budgets that never reset).
-- Returns 1 when installed, 0 when a counter was live.
local NEVER_TTL = 30 * 86400 * 1000 -- re-read from the ledger once a month
local MIN_TTL = 3600 * 1000 -- a period that ended (by Redis's clock) still gets an hour
local ttl = NEVER_TTL
if ARGV[3] ~= '' then
  local t = redis.call('TIME')
  local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  ttl = math.max(tonumber(ARGV[3]) - now_ms, MIN_TTL)
end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', fmt(ttl)) then
  return 0
end
redis.call('SADD', KEYS[2], ARGV[2])
local left = redis.call('PTTL', KEYS[2])
if left == -1 or left < ttl then
  redis.call('PEXPIRE', KEYS[2], fmt(ttl))
end
return 1
