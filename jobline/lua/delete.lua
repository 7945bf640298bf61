-- KEYS[1..B] queue block, KEYS[B+1] job hash, KEYS[B+2] job logs, KEYS[B+3] queue jobs index,
-- KEYS[B+4] type index, KEYS[B+5] processing list of the job's worker, KEYS[B+6] its custom events
-- ARGV[1] id, ARGV[2] job channel, ARGV[3] that worker's control channel, ARGV[4] its id,
-- ARGV[5] the status it must have, or '' for any
-- Removes the job everywhere (stopping it first if active).
-- Returns {'ok'}, {'missing'}, {'moved'} or {'conflict', status}.
--@include queue_block
local key, logs, queue_jobs = KEYS[BLOCK + 1], KEYS[BLOCK + 2], KEYS[BLOCK + 3]
local type_jobs, processing, custom = KEYS[BLOCK + 4], KEYS[BLOCK + 5], KEYS[BLOCK + 6]
local id, channel, control_channel, worker_id, expected = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local f = redis.call('HMGET', key, 'status', 'workerId', 'queue', 'uniqueKey', 'parentId', 'parentQueue', 'onFailure',
  'token', 'seq', 'tags')
local status = f[1]
if not status then return {'missing'} end
if expected ~= '' and status ~= expected then return {'conflict', status} end
if not withdraw(id, status, f[2], worker_id, processing, control_channel, f[8]) then return {'moved'} end
index_status(id, nil, status, nil)
unindex_findable(id, f[9], f[10])
redis.call('ZREM', queue_jobs, id)
redis.call('ZREM', type_jobs, id)
redis.call('DEL', key, logs, custom, key .. ':children', key .. ':children:done')
release_unique({id = id, uniqueKey = f[4]}, 0, true)
if UNFINISHED[status] then  -- a child removed before it finished counts as cancelled for its parent
  notify_parent({id = id, parentId = f[5], parentQueue = f[6], onFailure = f[7]}, 'cancelled', 'was deleted')
end
emit(channel, 'job-removed', cjson.encode({id = id}), f[3])
return {'ok'}
