-- KEYS[1..B] the parent's queue block, KEYS[B+1] the parent's hash
-- ARGV[1] parent id, ARGV[2] parent channel, then per child that will be retried: its id and its
-- status ('failed' or 'cancelled'; a child may live on another shard, so the caller read it)
-- Retrying a failed or cancelled parent whose failed and cancelled children are retried with it:
-- it waits for them again (`waiting-children`), their counts back to pending.
-- Returns {'ok', hash}, {'missing'} or {'conflict', status}.
--@include queue_block
local key = KEYS[BLOCK + 1]
local id, channel = ARGV[1], ARGV[2]
local h = load_job(key)
if not h then return {'missing'} end
if h.status ~= 'failed' and h.status ~= 'cancelled' then return {'conflict', h.status} end
local c = cjson.decode(h.children)
for i = 3, #ARGV, 2 do
  if redis.call('SREM', key .. ':children:done', ARGV[i]) == 1 then
    c[ARGV[i + 1]] = math.max(c[ARGV[i + 1]] - 1, 0)
    c.pending = c.pending + 1
  end
end
index_status(id, h.seq, h.status, 'waiting-children')
if h.uniqueKey and not unique_holder(h.uniqueKey, now_ms()) then take_unique(h) end
return {'ok', save(key, h, {
  status = 'waiting-children', attemptsMade = 0, progress = 0, recoveries = 0,
  finishedAt = false, startedAt = false, action = false, result = false, runAt = false, failedReason = false,
  children = string.format('{"total":%d,"completed":%d,"failed":%d,"cancelled":%d,"pending":%d}',
    c.total, c.completed, c.failed, c.cancelled, c.pending),
}, channel)}
