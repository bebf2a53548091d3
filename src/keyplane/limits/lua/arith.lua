-- Exact integer arithmetic for the limiter scripts.
--
-- Lua numbers are doubles: integers are exact up to 2^53 and sums, differences, doubling and
-- exact divisions of such integers stay exact as long as every result stays below 2^53. The
-- helpers below never form a product of two large numbers; see keyplane.limits.redis
-- for the argument that every intermediate of the rate-window maths stays below 2^53.

-- 2^50: a bound on whole units of window debt and on microseconds of window TTL.
local MAX_UNITS = 1125899906842624

local function fmt(n)
  return string.format('%.0f', n)
end

-- x // m and x % m for integers 0 <= x < 2^53: fmod is exact, and (x - r) / m divides an
-- exact multiple, so neither rounds (a plain math.floor(x / m) can round up to the next
-- integer when the quotient is large).
local function divmod(x, m)
  local r = math.fmod(x, m)
  return (x - r) / m, r
end

-- (a * b) // m and (a * b) % m for non-negative integers a < 2^53 and m < 2^51, with b given
-- as (bq, br) = divmod(b, m). Long multiplication over the bits of a keeps r below 2m and q
-- below 2 * cap + bq + 1, so nothing rounds; it returns nil as soon as q exceeds cap, which
-- callers read as "more than cap".
local function muldiv(a, bq, br, m, cap)
  local bit = 1
  while bit * 2 <= a do
    bit = bit * 2
  end
  local q, r = 0, 0
  while bit >= 1 do
    q, r = q * 2, r * 2
    if r >= m then
      q, r = q + 1, r - m
    end
    if a >= bit then
      a = a - bit
      q, r = q + bq, r + br
      if r >= m then
        q, r = q + 1, r - m
      end
    end
    if q > cap then
      return nil
    end
    bit = bit / 2
  end
  return q, r
end

-- Money: budgets go up to 10^18 micro-credits, past 2^53, so amounts stay decimal strings in
-- Redis (INCRBY and HINCRBY are exact 64-bit integer commands) and are compared here in two
-- limbs of base 10^9: each limb, and the sum of a few of them, is far below 2^53.
local LIMB = 1000000000

local function limbs(s)
  local sign = 1
  if string.sub(s, 1, 1) == '-' then
    sign, s = -1, string.sub(s, 2)
  end
  local n = #s
  if n <= 9 then
    return 0, sign * tonumber(s)
  end
  return sign * tonumber(string.sub(s, 1, n - 9)), sign * tonumber(string.sub(s, n - 8))
end

-- sum(sign_i * amount_i) as (hi, lo) with 0 <= lo < 10^9: the value is hi * 10^9 + lo, and
-- it is positive when hi > 0 or (hi == 0 and lo > 0), negative when hi < 0.
local function money_sum(amounts, signs)
  local hi, lo = 0, 0
  for i, amount in ipairs(amounts) do
    local h, l = limbs(amount)
    hi, lo = hi + signs[i] * h, lo + signs[i] * l
  end
  local carry = math.floor(lo / LIMB) -- |lo| < 10 * 10^9: this quotient cannot round
  return hi + carry, lo - carry * LIMB
end

local function money_sign(hi, lo)
  if hi > 0 or (hi == 0 and lo > 0) then
    return 1
  elseif hi == 0 and lo == 0 then
    return 0
  end
  return -1
end

-- The decimal text of a non-negative (hi, lo).
local function money_text(hi, lo)
  if hi == 0 then
    return fmt(lo)
  end
  return fmt(hi) .. string.format('%09.0f', lo)
end

-- Rate and token windows (GCRA). gcra.py keeps the TAT scaled by the limit L, so one emission
-- interval is exactly P (the period in microseconds). Here a window's state is its debt at an
-- instant t0, "t0 u v": the scaled TAT minus t0 * L equals u * P + v, with 0 <= v < P. u is
-- whole emission intervals (at most the burst, plus settled overruns, capped at MAX_UNITS) and
-- v is below P, so both stay far below 2^53 whatever L and P are; time only enters through
-- muldiv, whose quotient is capped.

-- The debt of a window now, with (lq, lr) = divmod(L, P): it shrinks by (now - t0) * L.
local function window_debt(key, now, lq, lr, p)
  local state = redis.call('GET', key)
  if not state then
    return 0, 0
  end
  local t0, u, v = string.match(state, '^(%d+) (%d+) (%d+)$')
  t0, u, v = tonumber(t0), tonumber(u), tonumber(v)
  local dt = now - t0
  if dt > 0 then
    local q, r = muldiv(dt, lq, lr, p, u)
    if q == nil then
      return 0, 0
    end
    u, v = u - q, v - r
    if v < 0 then
      u, v = u - 1, v + p
    end
    if u < 0 then
      return 0, 0
    end
  elseif dt < 0 then
    -- The clock went back: as in gcra the debt grows by the difference (within the cap).
    local q, r = muldiv(-dt, lq, lr, p, MAX_UNITS)
    if q == nil then
      return MAX_UNITS, v
    end
    u, v = u + q, v + r
    if v >= p then
      u, v = u + 1, v - p
    end
  end
  return math.min(u, MAX_UNITS), v
end

-- A UTC day in microseconds, and the instant a window is checked at: now, or the start of
-- now's UTC day for a calendar-day window (exact: both stay far below 2^53).
local DAY_US = 86400000000
local function window_now(now, day)
  if day == 1 then
    return now - now % DAY_US
  end
  return now
end

-- Store a window's debt at now, with (pq, pr) = divmod(P, L). On Redis's clock the key
-- expires when the debt is paid, ceil((u * P + v) / L) microseconds from now: a window back
-- to full needs no state. On a caller's clock Redis cannot tell when that is, so it stays.
-- A calendar-day window (day == 1) is stored at the start of its day and lasts until the
-- next midnight, when any day's debt is paid (domain/admission.window_now_us).
local function window_store(key, now, on_redis_time, u, v, pq, pr, l, day)
  if u == 0 and v == 0 then
    redis.call('DEL', key)
    return
  end
  local state = fmt(now) .. ' ' .. fmt(u) .. ' ' .. fmt(v)
  if not on_redis_time then
    redis.call('SET', key, state)
    return
  end
  if day == 1 then
    local ms = divmod(now + DAY_US, 1000)
    redis.call('SET', key, state, 'PXAT', fmt(ms + 1))
    return
  end
  local q, r = muldiv(u, pq, pr, l, MAX_UNITS)
  if q == nil then
    redis.call('SET', key, state) -- paid off in more than 35 years: keep it
    return
  end
  local q2, r2 = divmod(r + v, l)
  local us = q + q2 + (r2 > 0 and 1 or 0)
  local ms, rest = divmod(us, 1000)
  redis.call('SET', key, state, 'PX', fmt(ms + (rest > 0 and 1 or 0) + 1))
end

-- The instant the scripts work at, and whether it is Redis's own (else the caller's: tests).
local function clock(given)
  local now = tonumber(given)
  if now >= 0 then
    return now, false
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2]), true
end
