-- KEYS[1..14] queue block, KEYS[15] job hash, KEYS[16] job logs, KEYS[17] queue jobs index,
-- KEYS[18] type index, KEYS[19] processing list of the job's worker, KEYS[20] the job's custom events
-- ARGV[1] id, ARGV[2] job channel, ARGV[3] that worker's control channel, ARGV[4] its id,
-- ARGV[5] the status it must have, or '' for any
-- Removes the job everywhere (stopping it first if active).
-- Returns {'ok'}, {'missing'}, {'moved'} or {'conflict', status}.
--@include queue_block
local key, logs, queue_jobs, type_jobs = KEYS[15], KEYS[16], KEYS[17], KEYS[18]
local processing, custom = KEYS[19], KEYS[20]
local id, channel, control_channel, worker_id, expected = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local f = redis.call('HMGET', key, 'status', 'workerId', 'queue', 'uniqueKey')
local status = f[1]
if not status then return {'missing'} end
if expected ~= '' and status ~= expected then return {'conflict', status} end
if not withdraw(id, status, f[2], worker_id, processing, control_channel) then return {'moved'} end
index_status(id, nil, status, nil)
redis.call('ZREM', queue_jobs, id)
redis.call('ZREM', type_jobs, id)
redis.call('DEL', key, logs, custom)
release_unique({id = id, uniqueKey = f[4]}, 0, true)
emit(channel, 'job-removed', cjson.encode({id = id}), f[3])
return {'ok'}
