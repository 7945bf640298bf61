-- KEYS[1..B] queue block
-- ARGV[1] queue name, ARGV[2] queue channel, ARGV[3] the settings (JSON, as the API shows them),
-- then field/value pairs of META to set, a value '' removing the field
-- Stores the queue's limits and retention (enforced by limits.lua and retention.lua), trims what a
-- new retention count leaves over, and publishes {"name", "paused", "settings"}.
--@include queue_block
local queue, channel, settings = ARGV[1], ARGV[2], ARGV[3]
for i = 4, #ARGV, 2 do
  if ARGV[i + 1] == '' then redis.call('HDEL', META, ARGV[i]) else redis.call('HSET', META, ARGV[i], ARGV[i + 1]) end
end
redis.call('HSET', META, 'settings', settings)
if not redis.call('HGET', META, 'rateMax') then redis.call('DEL', STARTS) end
for _, status in ipairs({'completed', 'failed', 'cancelled'}) do retain_count(status) end
local paused = redis.call('HGET', META, 'paused') == '1'
emit(channel, 'queue', '{"name":' .. cjson.encode(queue) .. ',"paused":' .. tostring(paused) .. ',"settings":' .. settings .. '}', queue)
return 1
