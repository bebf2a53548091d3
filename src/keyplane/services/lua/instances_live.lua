-- The instances whose last heartbeat is at most ARGV[1] ms old, by Redis's own time.
-- KEYS: the registry (sorted set). ARGV: liveness bound (ms).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[1]), '+inf')
