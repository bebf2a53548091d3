-- An instance says it is alive: its score in the registry becomes Redis's own time (ms), so
-- instances with skewed clocks still agree on who is live. Instances silent for longer than
-- the retention are dropped, and the registry itself expires if every instance is gone.
-- KEYS: the registry (sorted set). ARGV: instance id, retention (ms).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return now
