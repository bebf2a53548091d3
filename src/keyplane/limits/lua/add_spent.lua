-- Advance live budget counters by a report the ledger has committed. A missing counter is
-- never created: it will be seeded from the ledger, which already holds the report.
-- KEYS: the key's set of counters, then counters. ARGV: cost, then per counter its member in
-- the set and 1 to advance it (0: only check it is still there).
-- Returns how many counters were advanced.
local advanced = 0
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    if ARGV[2 * i - 1] == '1' then
      redis.call('INCRBY', KEYS[i], ARGV[1])
      advanced = advanced + 1
    end
  else
    redis.call('SREM', KEYS[1], ARGV[2 * i - 2]) -- expired: forget it
  end
end
return advanced
