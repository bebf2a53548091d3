-- Release one API key's reservations whose hold time has passed, and forget the estimates of
-- expired ones past their time; return how many were released.
-- KEYS: the five reservation keys (holds.lua). ARGV: now (-1: Redis TIME), remember (us).
local now = clock(ARGV[1])
local released = expire_due(now, tonumber(ARGV[2]))
forget_due(now)
return released
