-- KEYS[1..B] queue block, KEYS[B+1] job hash
-- ARGV[1] id, ARGV[2] job channel
-- failed or cancelled -> waiting, with attemptsMade and progress back to 0.
--@include queue_block
local key = KEYS[BLOCK + 1]
local id, channel = ARGV[1], ARGV[2]
local h = load_job(key)
if not h then return {'missing'} end
if h.status ~= 'failed' and h.status ~= 'cancelled' then return {'conflict', h.status} end
index_status(id, h.seq, h.status, 'waiting')
push_waiting(id, h.priority, false)
-- Unfinished again: it holds its uniqueKey again, unless another job took it meanwhile.
if h.uniqueKey and not unique_holder(h.uniqueKey, now_ms()) then take_unique(h) end
return {'ok', save(key, h, {
  status = 'waiting', attemptsMade = 0, progress = 0, recoveries = 0,
  finishedAt = false, startedAt = false, action = false, result = false, runAt = false,
}, channel)}
