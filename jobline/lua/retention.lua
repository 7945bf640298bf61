-- KEYS[1..B] queue block
-- ARGV[1] at most how many jobs to look at per status
-- The workers' periodic sweep: finished jobs older (by finishedAt) than their status's age limit
-- go, oldest first, and any over its count limit. Looks at the oldest ARGV[1] of each status, so a
-- call stays short. Returns how many jobs were removed.
--@include queue_block
local limit = tonumber(ARGV[1])
local now = now_ms()
local removed = 0
for _, status in ipairs({'completed', 'failed', 'cancelled'}) do
  local rule = redis.call('HMGET', META, 'keep:' .. status .. ':count', 'keep:' .. status .. ':age')
  if rule[1] then removed = removed + retain_count(status, tonumber(rule[1])) end
  if rule[2] then
    local cutoff = now - tonumber(rule[2])
    for _, id in ipairs(redis.call('ZRANGE', STATUS_INDEX[status], 0, limit - 1)) do
      local finished = tonumber(redis.call('HGET', JOB_PREFIX .. id, 'finishedAt'))
      if finished and finished <= cutoff then
        forget(id)
        removed = removed + 1
      end
    end
  end
end
return removed
