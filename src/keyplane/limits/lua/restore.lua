-- Renew a key's marker; if Redis lost it while it should still be there, rebuild what the
-- operator chose (KEYPLANE_LIMITS_AFTER_REDIS_LOSS) before any request is admitted again.
--
-- KEYS: the marker, the lost-slots deadline, then one per long window.
-- ARGV: now (-1: Redis TIME), until when the marker was promised to last (-1: never
-- promised), the marker's new lifetime (us), mode ('fail_closed', 'reseed' or 'forget'),
-- hold (us);
-- per long window: burst, L // P, L % P, P, P // L, P % L, L, when the database last knew it
-- to be full again (us; -1: never), calendar day (1/0: checked at its day's start).
-- Returns {lost (1/0), until when the marker now lasts, now}.
local now, on_redis_time = clock(ARGV[1])
local promised, lifetime = tonumber(ARGV[2]), tonumber(ARGV[3])
local mode, hold = ARGV[4], tonumber(ARGV[5])
local mark = tonumber(redis.call('GET', KEYS[1]) or '0')

local function keep(key, value, ends)
  if on_redis_time then
    local ms = divmod(ends - now, 1000)
    redis.call('SET', key, fmt(value), 'PX', fmt(ms + 1000))
  else
    redis.call('SET', key, fmt(value))
  end
end

-- Redis drops the marker only at its promised time; gone (or stale) before that, the data
-- went with it. Any other missing marker is a key never limited here, or idle past it.
local lost = 0
if mark <= now and promised > now then
  lost = 1
  if mode ~= 'forget' then
    -- Every slot was taken while the marker had at least a hold to live, so each one is
    -- over by the promise, and by now + hold (the loss came before now): refuse until then.
    keep(KEYS[2], math.min(now + hold, promised), math.min(now + hold, promised))
    for i = 3, #KEYS do
      local a = 5 + 9 * (i - 3)
      local burst, lq, lr, p = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]),
        tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
      local day = tonumber(ARGV[a + 9])
      local at = window_now(now, day)
      local u, v = window_debt(KEYS[i], at, lq, lr, p)
      local want_u, want_v = burst, 0 -- fail_closed: used up at this instant
      if mode == 'reseed' then
        -- The debt the database last knew of: (full again - now) * L, split by P.
        local full_at = tonumber(ARGV[a + 8])
        want_u, want_v = 0, 0
        if full_at > at then
          want_u, want_v = muldiv(full_at - at, lq, lr, p, MAX_UNITS)
          if want_u == nil then
            want_u, want_v = MAX_UNITS, 0
          end
        end
      end
      -- Never less than what the window holds already.
      if want_u > u or (want_u == u and want_v > v) then
        window_store(KEYS[i], at, on_redis_time, want_u, want_v, tonumber(ARGV[a + 5]),
          tonumber(ARGV[a + 6]), tonumber(ARGV[a + 7]), day)
      end
    end
  end
end
local ends = math.max(mark, now + lifetime)
keep(KEYS[1], ends, ends)
return { lost, ends, now }
