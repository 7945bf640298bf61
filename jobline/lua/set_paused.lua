-- KEYS[1..B] queue block
-- ARGV[1] queue name, ARGV[2] queue channel, ARGV[3] '1' to pause, '0' to resume
-- Pausing moves the waiting line aside, so BLMOVE on the wait list hands out nothing; resuming
-- moves it back. Active jobs are untouched. Publishes {"name", "paused"}.
--@include queue_block
local queue, channel, pause = ARGV[1], ARGV[2], ARGV[3] == '1'
local from, to = WAIT, PAUSED
if not pause then from, to = PAUSED, WAIT end
if pause then redis.call('HSET', META, 'paused', '1') else redis.call('HDEL', META, 'paused') end
if redis.call('EXISTS', to) == 0 then
  if redis.call('EXISTS', from) == 1 then redis.call('RENAME', from, to) end
else
  while redis.call('LMOVE', from, to, 'LEFT', 'RIGHT') do end
end
emit(channel, 'queue', cjson.encode({name = queue, paused = pause}), queue)
return 1
