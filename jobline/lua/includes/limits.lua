-- Queue limits (set by PATCH /api/admin/queues/{name}, kept in META): at most `concurrency` jobs
-- of the queue active at once, and at most `rateMax` starts in any `ratePerMs` window, across
-- every worker, on the Redis clock. The starts of the window are a sorted set next to META.
local STARTS = QUEUE_STEM .. 'starts'
local RATE_ON = false  -- set by allowance(): claims record their start

-- How many more jobs may start now; when none, also how long (ms) until the limit may allow one.
local function allowance(now)
  local s = redis.call('HMGET', META, 'concurrency', 'rateMax', 'ratePerMs')
  local room, hold = math.huge, 0
  if s[1] then
    room = tonumber(s[1]) - redis.call('ZCARD', STATUS_INDEX.active)
    if room <= 0 then return 0, {{CONCURRENCY_RECHECK_MS}} end  -- when one of them finishes
  end
  if s[2] then
    RATE_ON = true
    local per = tonumber(s[3])
    redis.call('ZREMRANGEBYSCORE', STARTS, '-inf', now - per)
    local left = tonumber(s[2]) - redis.call('ZCARD', STARTS)
    if left <= 0 then
      local oldest = redis.call('ZRANGE', STARTS, 0, 0, 'WITHSCORES')
      return 0, math.max(1, tonumber(oldest[2]) + per - now)
    end
    room = math.min(room, left)
  end
  return room, hold
end

local function record_start(id, token, now)
  if RATE_ON then redis.call('ZADD', STARTS, now, id .. ':' .. token) end
end
