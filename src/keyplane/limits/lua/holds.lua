-- Reservations of one API key. KEYS[1..5] of every script that includes this file:
--   res       hash: "h:<request id>" -> "<hold until> <slot 0|1> <tokens in> <tokens out>
--             [=<scope> <micros>]..." for a held reservation, "l:<request id>" -> "<tokens in>
--             <tokens out>" for one that expired unsettled (the estimate a late report corrects
--             instead of charging the tokens twice)
--   exp       zset: request id by hold-until (microseconds) of held reservations
--   late      zset: request id by the instant an expired reservation's estimate is forgotten
--   slots     string: concurrency slots held
--   reserved  hash: scope -> micro-credits reserved by held reservations
local K_RES, K_EXP, K_LATE, K_SLOTS, K_RESERVED = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]

local function fields(record)
  local f = {}
  for word in string.gmatch(record, '%S+') do
    f[#f + 1] = word
  end
  return f
end

-- Every reservation key lives at least ms more. They expire together once every hold (and
-- every remembered estimate) is over, when all they count would have been released anyway.
local function keep_holds(ms)
  for i = 1, 5 do
    local left = redis.call('PTTL', KEYS[i])
    if left == -1 or (left >= 0 and left < ms) then
      redis.call('PEXPIRE', KEYS[i], fmt(ms))
    end
  end
end

local function keep_ms(duration_us)
  local ms = divmod(math.max(duration_us, 0), 1000)
  return ms + 1000
end

-- Remove a held reservation and give back the slot and the money it took; return its fields.
local function take(rid)
  local record = redis.call('HGET', K_RES, 'h:' .. rid)
  if not record then
    return nil
  end
  local f = fields(record)
  redis.call('HDEL', K_RES, 'h:' .. rid)
  redis.call('ZREM', K_EXP, rid)
  if f[2] == '1' then
    if redis.call('DECR', K_SLOTS) <= 0 then
      redis.call('DEL', K_SLOTS)
    end
  end
  for i = 5, #f, 2 do
    local scope = string.sub(f[i], 2)
    if redis.call('HINCRBY', K_RESERVED, scope, '-' .. f[i + 1]) <= 0 then
      redis.call('HDEL', K_RESERVED, scope)
    end
  end
  return f
end

-- Release every reservation whose hold time has passed, remembering token estimates. Each
-- reservation is released once, so the work is amortised over the admits that made them.
local function expire_due(now, remember)
  local released = 0
  for _, rid in ipairs(redis.call('ZRANGEBYSCORE', K_EXP, '-inf', fmt(now))) do
    local f = take(rid)
    if f then
      released = released + 1
      if f[3] ~= '0' or f[4] ~= '0' then
        redis.call('HSET', K_RES, 'l:' .. rid, f[3] .. ' ' .. f[4])
        redis.call('ZADD', K_LATE, fmt(now + remember), rid)
      end
    end
  end
  if released > 0 then
    keep_holds(keep_ms(remember))
  end
  return released
end

-- Forget the estimates of expired reservations past their time. As in MemoryLimiter this
-- happens in the sweep only: until then a late report still corrects its estimate.
local function forget_due(now)
  local forgotten = redis.call('ZRANGEBYSCORE', K_LATE, '-inf', fmt(now))
  for _, rid in ipairs(forgotten) do
    redis.call('HDEL', K_RES, 'l:' .. rid)
  end
  if #forgotten > 0 then
    redis.call('ZREMRANGEBYSCORE', K_LATE, '-inf', fmt(now))
  end
end
