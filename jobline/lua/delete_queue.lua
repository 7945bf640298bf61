-- KEYS[1] the queue's jobs index, KEYS[2..] every other key of the queue alone
-- Removes the queue's keys (its settings and counters) if it holds no job. Returns 1, or 0 while
-- it holds jobs.
if redis.call('ZCARD', KEYS[1]) > 0 then return 0 end
redis.call('DEL', unpack(KEYS))
return 1
