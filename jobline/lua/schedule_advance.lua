-- KEYS[1] the schedules' sorted set (by next run), KEYS[2] the schedule's hash
-- ARGV[1] schedule id, ARGV[2] the due time just served (ms), ARGV[3] its next due time,
-- ARGV[4] the id of the job created for ARGV[2]
-- Moves the schedule on only if it still names that due time (another worker, or a PATCH, may
-- have moved it already): each due time is served once. A paused schedule stays out of the set.
-- Returns 1 if it moved, else 0.
if redis.call('HGET', KEYS[2], 'nextRunAt') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[2], 'nextRunAt', ARGV[3], 'lastRunAt', ARGV[2], 'lastJobId', ARGV[4])
if redis.call('HGET', KEYS[2], 'paused') ~= '1' then redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1]) end
return 1
