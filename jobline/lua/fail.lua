-- KEYS[1..B] queue block, KEYS[B+1] processing list, KEYS[B+2] job hash, KEYS[B+3] job logs
-- ARGV[1] id, ARGV[2] job channel, ARGV[3] worker id, ARGV[4] lease token, ARGV[5] reason,
-- ARGV[6] '1' if the attempt may be retried, ARGV[7] how many waiting jobs to claim for the freed
-- slot (0 or 1), ARGV[8] job key prefix, ARGV[9] log cap, ARGV[10] job channel prefix,
-- ARGV[11] ms to wait when the handler said the service it calls is rate limited, else 0
-- Retries after backoffMs * 2^(attemptsMade-1) while attempts remain, else fails the job. Either
-- way the reason goes to the job's logs too ("attempt 2 failed: ..."), so every attempt's error
-- stays readable, not only the last. Rate limited (RateLimited(ms) in the handler): back to
-- delayed for that long, and the attempt does not count. Returns {the new status, or '' when the lease was lost (and
-- nothing changed); the jobs claimed}.
--@include queue_block
local processing, key, logs = KEYS[BLOCK + 1], KEYS[BLOCK + 2], KEYS[BLOCK + 3]
local id, channel, worker_id, reason = ARGV[1], ARGV[2], ARGV[3], ARGV[5]
redis.call('LREM', processing, 1, id)
local claim_next = function() return (claim({}, tonumber(ARGV[7]), processing, worker_id, ARGV[8], ARGV[10])) end
local h = load_job(key)
if not holds_lease(h, worker_id, ARGV[4]) then return {'', claim_next()} end
local made, max, backoff = tonumber(h.attemptsMade), tonumber(h.maxAttempts), tonumber(h.backoffMs)
local max_backoff = tonumber(h.maxBackoffMs) or {{DEFAULT_MAX_BACKOFF_MS}}  -- jobs from before maxBackoffMs
local now = now_ms()
local changes = {failedReason = reason, action = false}
local limited_ms = tonumber(ARGV[11]) or 0
if limited_ms > 0 then
  changes.failedReason = nil
  redis.call('RPUSH', logs, 'attempt ' .. h.attemptsMade .. ' rate limited: ' .. reason)
else
  redis.call('RPUSH', logs, 'attempt ' .. h.attemptsMade .. ' failed: ' .. reason)
end
redis.call('LTRIM', logs, -tonumber(ARGV[9]), -1)
if limited_ms > 0 then
  changes.status, changes.runAt, changes.attemptsMade = 'delayed', now + limited_ms, made - 1
  redis.call('ZADD', DELAYED, changes.runAt, id)
elseif ARGV[6] == '1' and made < max then
  -- capped before it can overflow: runAt is always a valid date
  changes.status, changes.runAt = 'delayed', now + math.min(backoff * math.pow(2, math.min(made - 1, 60)), max_backoff)
  redis.call('ZADD', DELAYED, changes.runAt, id)
else
  changes.status, changes.finishedAt = 'failed', now
end
if limited_ms == 0 then mark_failure(h, changes, now) end
index_status(id, h.seq, 'active', changes.status)
save(key, h, changes, channel)
if changes.status == 'failed' then
  count_finished(h, 'failed', now)
  release_unique(h, now, false)
  notify_parent(h, 'failed', reason)
  retain_count('failed')
end
return {changes.status, claim_next()}
