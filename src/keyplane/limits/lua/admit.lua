-- Admit one request: check the concurrency slot, every window and every budget, and consume
-- them all only if all of them allow it.
--
-- KEYS: the five reservation keys (holds.lua), then one per window, then one spent counter
-- per budget, then the key's marker and its lost-slots deadline.
-- ARGV: now (-1: Redis TIME), hold (us), request id, max parallel (-1: none), remember (us),
-- window count, budget count, tokens in, tokens out; per window: cost, burst, L // P, L % P,
-- P, P // L, P % L, L, calendar day (1/0); per budget: limit ('' for none), cost, scope; then how long the marker
-- must still last (us; -1: the request needs no marker) and below what it is renewed.
-- Returns {3, now}: the marker is missing or too short (nothing was consumed), {2, index...}:
-- those budgets' spent counters are missing (nothing was consumed), or {1 admitted | 0
-- refused, now, free slots (-1: none asked), per window u, v (the debt before this request),
-- per budget spent, reserved, renew the marker (1/0), lost slots held until (0: none)}.
local now, on_redis_time = clock(ARGV[1])
local hold_us, rid, max_parallel = tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local remember = tonumber(ARGV[5])
local nw, nb = tonumber(ARGV[6]), tonumber(ARGV[7])
local tokens_in, tokens_out = tonumber(ARGV[8]), tonumber(ARGV[9])
local W, B = 9, 9 + 9 * nw -- where the window and budget arguments start

-- The marker says this Redis holds the key's long windows and slots: a restart or a failover
-- that lost them loses it too, and nothing of the request is looked at until the caller
-- has rebuilt what it can (restore.lua). Checked here, in the admission itself, so no
-- request slips in between a check and the admission.
local M = B + 3 * nb
local need_us, renew_us = tonumber(ARGV[M + 1]), tonumber(ARGV[M + 2])
local K_MARK, K_LOST = KEYS[5 + nw + nb + 1], KEYS[5 + nw + nb + 2]
local renew, lost_until = 0, 0
if need_us >= 0 then
  local mark = tonumber(redis.call('GET', K_MARK) or '0')
  if mark - now < need_us then
    return { 3, now }
  end
  if mark - now < renew_us then
    renew = 1
  end
  lost_until = tonumber(redis.call('GET', K_LOST) or '0')
  if lost_until <= now then
    lost_until = 0
  end
end

-- Budget counters come from the durable ledger, never from here: ask for the missing ones.
local spent, missing = {}, {}
for j = 1, nb do
  spent[j] = redis.call('GET', KEYS[5 + nw + j])
  if not spent[j] then
    missing[#missing + 1] = j - 1
  end
end
if #missing > 0 then
  return { 2, unpack(missing) }
end

expire_due(now, remember)
local ok = true
local reply = { 0, now, -1 }

local own = redis.call('HGET', K_RES, 'h:' .. rid)
own = own and fields(own)
if max_parallel >= 0 then
  -- A retried verify (same request id) reuses its own slot rather than taking another.
  local in_use = tonumber(redis.call('GET', K_SLOTS) or '0')
  if own and own[2] == '1' then
    in_use = in_use - 1
  end
  local free = math.max(0, max_parallel - in_use)
  if lost_until > 0 then
    free = 0 -- slots taken before Redis lost them may still be in use
  end
  ok = ok and free >= 1
  reply[3] = free
end

local debts = {}
for i = 1, nw do
  local a = W + 9 * (i - 1)
  local cost, burst = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local at = window_now(now, tonumber(ARGV[a + 9]))
  local u, v = window_debt(KEYS[5 + i], at, tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]),
    tonumber(ARGV[a + 5]))
  -- gcra.check allows (u + cost) * P + v <= burst * P, which with 0 <= v < P is this:
  ok = ok and u + cost + (v > 0 and 1 or 0) <= burst
  debts[i] = { u, v }
  reply[#reply + 1] = u
  reply[#reply + 1] = v
end

local reserved = {}
for j = 1, nb do
  local a = B + 3 * (j - 1)
  local limit, cost, scope = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  reserved[j] = redis.call('HGET', K_RESERVED, scope) or '0'
  if limit ~= '' then
    -- left = limit - spent - reserved; fits when cost <= max(left, 0) and something is left
    -- for a request without an estimate.
    local left = money_sign(money_sum({ limit, spent[j], reserved[j] }, { 1, -1, -1 }))
    local after = money_sign(money_sum({ limit, spent[j], reserved[j], cost }, { 1, -1, -1, -1 }))
    ok = ok and after >= 0 and (cost ~= '0' or left > 0)
  end
  reply[#reply + 1] = spent[j]
  reply[#reply + 1] = reserved[j]
end

reply[#reply + 1] = renew
reply[#reply + 1] = lost_until
if not ok then
  return reply
end
reply[1] = 1

-- Everything allows the request: consume it all.
for i = 1, nw do
  local a = W + 9 * (i - 1)
  local day = tonumber(ARGV[a + 9])
  window_store(KEYS[5 + i], window_now(now, day), on_redis_time,
    debts[i][1] + tonumber(ARGV[a + 1]), debts[i][2], tonumber(ARGV[a + 6]),
    tonumber(ARGV[a + 7]), tonumber(ARGV[a + 8]), day)
end

local hold, slot, held_in, held_out = now + hold_us, '0', 0, 0
local scopes, amounts = {}, {}
if own then
  hold = math.max(hold, tonumber(own[1]))
  slot, held_in, held_out = own[2], tonumber(own[3]), tonumber(own[4])
  for i = 5, #own, 2 do
    scopes[#scopes + 1] = own[i]
    amounts[own[i]] = own[i + 1]
  end
end
if max_parallel >= 0 and slot == '0' then
  slot = '1'
  redis.call('INCR', K_SLOTS)
end
held_in, held_out = held_in + tokens_in, held_out + tokens_out
for j = 1, nb do
  local a = B + 3 * (j - 1)
  local limit, cost, scope = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  if limit ~= '' and cost ~= '0' then
    redis.call('HINCRBY', K_RESERVED, scope, cost)
    local name = '=' .. scope
    if amounts[name] then
      amounts[name] = money_text(money_sum({ amounts[name], cost }, { 1, 1 }))
    else
      scopes[#scopes + 1] = name
      amounts[name] = cost
    end
  end
end
if own or slot == '1' or #scopes > 0 or held_in ~= 0 or held_out ~= 0 then
  -- Something to settle later.
  local record = { fmt(hold), slot, fmt(held_in), fmt(held_out) }
  for _, name in ipairs(scopes) do
    record[#record + 1] = name
    record[#record + 1] = amounts[name]
  end
  redis.call('HSET', K_RES, 'h:' .. rid, table.concat(record, ' '))
  redis.call('ZADD', K_EXP, fmt(hold), rid)
  keep_holds(keep_ms(hold - now + remember))
end
return reply
