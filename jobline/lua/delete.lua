-- KEYS[1..20] queue block, KEYS[21] job hash, KEYS[22] job logs, KEYS[23] all-jobs index,
-- KEYS[24] queue jobs index, KEYS[25] type index, KEYS[26] processing list of the job's worker,
-- KEYS[27] the job's custom events
-- ARGV[1] id, ARGV[2] job channel, ARGV[3] that worker's control channel, ARGV[4] its id,
-- ARGV[5] the status it must have, or '' for any
-- Removes the job everywhere (stopping it first if active).
-- Returns {'ok'}, {'missing'}, {'moved'} or {'conflict', status}.
--@include queue_block
local key, logs, processing, custom = KEYS[21], KEYS[22], KEYS[26], KEYS[27]
local all_jobs, queue_jobs, type_jobs = KEYS[23], KEYS[24], KEYS[25]
local id, channel, control_channel, worker_id, expected = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local f = redis.call('HMGET', key, 'status', 'workerId')
local status = f[1]
if not status then return {'missing'} end
if expected ~= '' and status ~= expected then return {'conflict', status} end
if not withdraw(id, status, f[2], worker_id, processing, control_channel) then return {'moved'} end
index_status(id, nil, status, nil)
redis.call('ZREM', all_jobs, id)
redis.call('ZREM', queue_jobs, id)
redis.call('ZREM', type_jobs, id)
redis.call('DEL', key, logs, custom)
emit(channel, 'job-removed', cjson.encode({id = id}))
return {'ok'}
