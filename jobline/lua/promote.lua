-- KEYS[1..B] queue block, KEYS[B+1] job hash
-- ARGV[1] id, ARGV[2] job channel
-- delayed -> waiting now.
--@include queue_block
local key = KEYS[BLOCK + 1]
local id, channel = ARGV[1], ARGV[2]
local h = load_job(key)
if not h then return {'missing'} end
if h.status ~= 'delayed' then return {'conflict', h.status} end
redis.call('ZREM', DELAYED, id)
index_status(id, h.seq, 'delayed', 'waiting')
push_waiting(id, h.priority, false)
return {'ok', save(key, h, {status = 'waiting', runAt = false}, channel)}
