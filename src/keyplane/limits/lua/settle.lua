-- Settle a committed usage report: release its reservation (slot and money) and correct each
-- token window by what was used minus what was estimated (gcra.adjust).
--
-- KEYS: the five reservation keys (holds.lua), then one per token window.
-- ARGV: now (-1: Redis TIME), has request id (1/0), request id, remember (us), window count,
-- tokens in, tokens out; per window: counts (input, output or total), L // P, L % P, P,
-- P // L, P % L, L.
local now, on_redis_time = clock(ARGV[1])
local rid, remember, nw = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local used_in, used_out = tonumber(ARGV[6]), tonumber(ARGV[7])

-- Its own reservation first, even past its hold time (as MemoryLimiter takes it), then the
-- others that are due.
local taken = ARGV[2] == '1' and take(rid)
expire_due(now, remember)
local estimated_in, estimated_out = 0, 0
if ARGV[2] == '1' then
  if taken then
    estimated_in, estimated_out = tonumber(taken[3]), tonumber(taken[4])
  else
    local late = redis.call('HGET', K_RES, 'l:' .. rid)
    if late then
      local e = fields(late)
      estimated_in, estimated_out = tonumber(e[1]), tonumber(e[2])
      redis.call('HDEL', K_RES, 'l:' .. rid)
      redis.call('ZREM', K_LATE, rid)
    end
  end
end

local function counted(counts, tokens_in, tokens_out)
  if counts == 'input' then
    return tokens_in
  elseif counts == 'output' then
    return tokens_out
  end
  return tokens_in + tokens_out
end

for i = 1, nw do
  local a = 7 + 7 * (i - 1)
  local counts = ARGV[a + 1]
  local delta = counted(counts, used_in, used_out) - counted(counts, estimated_in, estimated_out)
  if delta ~= 0 then
    local u, v = window_debt(KEYS[5 + i], now, tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]),
      tonumber(ARGV[a + 4]))
    -- An overrun is charged even past the burst; a refund never takes the debt below zero.
    u = math.min(u + delta, MAX_UNITS)
    if u < 0 then
      u, v = 0, 0
    end
    window_store(KEYS[5 + i], now, on_redis_time, u, v, tonumber(ARGV[a + 5]),
      tonumber(ARGV[a + 6]), tonumber(ARGV[a + 7]))
  end
end
return 1
