-- An operator's reset of one API key: make the named windows full again and, when asked,
-- free every concurrency slot. Reservations keep their budget holds; one that held a slot is
-- rewritten as holding none, so settling it later gives nothing back twice.
-- KEYS: the five reservation keys (holds.lua), the key's lost-slots deadline, then the windows.
-- ARGV: 1 to free the slots, 0 to leave them.
-- Returns how many slots were freed.
for i = 7, #KEYS do
  redis.call('DEL', KEYS[i])
end
if ARGV[1] ~= '1' then
  return 0
end
local freed = 0
local entries = redis.call('HGETALL', K_RES)
for i = 1, #entries, 2 do
  local name, record = entries[i], entries[i + 1]
  if string.sub(name, 1, 2) == 'h:' then
    local hold, slot, rest = string.match(record, '^(%S+) (%S+)(.*)$')
    if slot == '1' then
      redis.call('HSET', K_RES, name, hold .. ' 0' .. rest)
      freed = freed + 1
    end
  end
end
redis.call('DEL', K_SLOTS)
-- Slots Redis lost count as taken until this deadline; the operator says they are free.
redis.call('DEL', KEYS[6])
return freed
