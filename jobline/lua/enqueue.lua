-- KEYS[1..20] queue block, KEYS[21] job hash, KEYS[22] seq counter, KEYS[23] all-jobs index,
-- KEYS[24] queue jobs index, KEYS[25] type index, KEYS[26] set of queue names
-- ARGV[1] id, ARGV[2] job channel, ARGV[3] delay ms, ARGV[4] queue name, ARGV[5..] field/value pairs
-- Returns the job hash (flat), or an error if the id is taken.
--@include queue_block
local key, seq_key = KEYS[21], KEYS[22]
local all_jobs, queue_jobs, type_jobs, queue_names = KEYS[23], KEYS[24], KEYS[25], KEYS[26]
local id, channel, delay, queue = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
if redis.call('EXISTS', key) == 1 then return redis.error_reply('ERR job id taken') end
local now = now_ms()
local seq = redis.call('INCR', seq_key)
local job = {}
for i = 5, #ARGV, 2 do job[ARGV[i]] = ARGV[i + 1] end
job.seq, job.createdAt, job.token = seq, now, 0
redis.call('ZADD', all_jobs, seq, id)
redis.call('ZADD', queue_jobs, seq, id)
redis.call('ZADD', type_jobs, seq, id)
redis.call('SADD', queue_names, queue)
if delay > 0 then
  job.status, job.runAt = 'delayed', now + delay
  redis.call('ZADD', DELAYED, now + delay, id)
else
  job.status = 'waiting'
  push_waiting(id, job.priority, false)
end
index_status(id, seq, nil, job.status)
return save(key, {}, job, channel)
