-- KEYS[1] workers sorted set, KEYS[2] this worker's hash
-- ARGV[1] worker id, ARGV[2..] field/value pairs
-- Stamps lastSeen with the Redis clock, the one every host shares.
--@include clock
local workers, worker = KEYS[1], KEYS[2]
local now = now_ms()
redis.call('HSET', worker, 'lastSeen', now, unpack(ARGV, 2))
redis.call('ZADD', workers, now, ARGV[1])
return now
