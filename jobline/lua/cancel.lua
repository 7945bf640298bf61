-- KEYS[1..B] queue block, KEYS[B+1] job hash, KEYS[B+2] processing list of the job's worker
-- ARGV[1] id, ARGV[2] job channel, ARGV[3] that worker's control channel, ARGV[4] its id
-- Returns {'ok', hash}, {'missing'}, {'conflict', status} or {'moved'} (worker changed: read again).
--@include queue_block
local key, processing = KEYS[BLOCK + 1], KEYS[BLOCK + 2]
local id, channel, control_channel, worker_id = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local h = load_job(key)
if not h then return {'missing'} end
local status = h.status
if not UNFINISHED[status] then return {'conflict', status} end
if not withdraw(id, status, h.workerId, worker_id, processing, control_channel, h.token) then return {'moved'} end
index_status(id, h.seq, status, 'cancelled')
local now = now_ms()
local saved = save(key, h, {status = 'cancelled', finishedAt = now, action = false, runAt = false}, channel)
release_unique(h, now, false)
notify_parent(h, 'cancelled')
retain_count('cancelled')
return {'ok', saved}
