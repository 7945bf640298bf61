-- KEYS[1..B] queue block, KEYS[B+1] job hash
-- ARGV[1] id, ARGV[2] job channel, ARGV[3] 'normal' or 'high'
-- Only for waiting or delayed jobs; a waiting job moves to its new place in line.
--@include queue_block
local key = KEYS[BLOCK + 1]
local id, channel, priority = ARGV[1], ARGV[2], ARGV[3]
local h = load_job(key)
if not h then return {'missing'} end
if h.status ~= 'waiting' and h.status ~= 'delayed' then return {'conflict', h.status} end
if h.status == 'waiting' and h.priority ~= priority then
  remove_waiting(id)
  push_waiting(id, priority, false)
end
return {'ok', save(key, h, {priority = priority}, channel)}
