-- Retention (PATCH /api/admin/queues/{name}, kept in META as keep:<status>:count and
-- keep:<status>:age): finished jobs beyond a count, or finished longer ago than an age, are
-- removed with their logs, index entries and uniqueKey, each with a job-removed event.
local CHANNEL_PREFIX = string.match(QUEUE_STEM, '^(.*):{%x+}:queue:') .. ':job:'

-- Remove a finished job entirely, and say so.
local function forget(id)
  local key = JOB_PREFIX .. id
  local f = redis.call('HMGET', key, 'status', 'type', 'uniqueKey', 'queue', 'seq', 'tags', 'failureGroup')
  if not f[1] then return end
  redis.call('ZREM', STATUS_INDEX[f[1]], id)
  unindex_findable(id, f[5], f[6])
  if f[1] == 'failed' then leave_failure_group(id, f[7]) end
  redis.call('ZREM', QUEUE_STEM .. 'jobs', id)
  redis.call('ZREM', QUEUE_STEM .. 'type:' .. f[2], id)
  redis.call('DEL', key, key .. ':logs', key .. ':events', key .. ':children', key .. ':children:done')
  release_unique({id = id, uniqueKey = f[3]}, 0, true)
  emit(CHANNEL_PREFIX .. id .. ':progress', 'job-removed', cjson.encode({id = id}), f[4])
end

-- Keep at most the status's count: called when a job enters `status`. Returns how many went.
local function retain_count(status, max)
  max = max or tonumber(redis.call('HGET', META, 'keep:' .. status .. ':count'))
  if not max then return 0 end
  local excess = redis.call('ZCARD', STATUS_INDEX[status]) - max
  if excess <= 0 then return 0 end
  for _, id in ipairs(redis.call('ZRANGE', STATUS_INDEX[status], 0, excess - 1)) do forget(id) end
  return excess
end
