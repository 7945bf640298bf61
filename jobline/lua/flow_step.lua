-- KEYS[1..B] the parent's queue block, KEYS[B+1] the parent's hash
-- ARGV[1] parent id, ARGV[2] parent channel, ARGV[3] child id, ARGV[4] the child's outcome
-- ('completed', 'failed' or 'cancelled'), ARGV[5] its reason, ARGV[6] its onFailure
-- The second step of a child's end (see notify_parent in queue_block.lua): counts the child once
-- (a set of the children applied, next to the parent's hash), then a waiting parent either fails
-- at once (a child failed, was cancelled or removed, and says fail-parent) or, once no child is
-- pending, becomes waiting, exactly once. Returns the ids of the parent's children that did not
-- finish, when it failed (the caller cancels them), else {}.
--@include queue_block
local key = KEYS[BLOCK + 1]
local id, channel, child, outcome, reason, on_failure = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
if redis.call('EXISTS', key) == 0 then return {} end  -- the parent is gone
if redis.call('SADD', key .. ':children:done', child) == 0 then return {} end  -- applied already
local h = load_job(key)
if not h.children then return {} end
local c = cjson.decode(h.children)
c[outcome] = (tonumber(c[outcome]) or 0) + 1
c.pending = math.max((tonumber(c.pending) or 1) - 1, 0)
local changes = {children = string.format('{"total":%d,"completed":%d,"failed":%d,"cancelled":%d,"pending":%d}',
  c.total, c.completed, c.failed, c.cancelled, c.pending)}
local unfinished = {}
local now = now_ms()
if h.status == 'waiting-children' then
  if outcome ~= 'completed' and on_failure ~= 'ignore' then
    local what = 'was cancelled'
    if outcome == 'failed' then what = 'failed: ' .. reason elseif reason ~= '' then what = reason end
    changes.status, changes.finishedAt = 'failed', now
    changes.failedReason = 'child ' .. child .. ' ' .. what
    mark_failure(h, changes, now)
    index_status(id, h.seq, 'waiting-children', 'failed')
    for _, other in ipairs(redis.call('LRANGE', key .. ':children', 0, -1)) do
      if redis.call('SISMEMBER', key .. ':children:done', other) == 0 then unfinished[#unfinished + 1] = other end
    end
  elseif c.pending == 0 then
    changes.status = 'waiting'
    index_status(id, h.seq, 'waiting-children', 'waiting')
    push_waiting(id, h.priority, false)
  end
end
save(key, h, changes, channel)
if changes.status == 'failed' then
  count_finished(h, 'failed', now)
  release_unique(h, now, false)
  notify_parent(h, 'failed', changes.failedReason)
  retain_count('failed')
end
return unfinished
