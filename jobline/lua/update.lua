-- KEYS[1] the queue's event log, KEYS[2] job hash, KEYS[3] job logs
-- ARGV[1] job channel, ARGV[2] worker id, ARGV[3] lease token, ARGV[4] progress or '',
-- ARGV[5] '1' to set the action, ARGV[6] action text, ARGV[7] '1' to append a log line,
-- ARGV[8] log line, ARGV[9] log cap, ARGV[10] '1' to save the state, ARGV[11] the state (JSON)
-- Returns 1, or 0 when this worker no longer holds the job (cancelled, or recovered elsewhere).
--@include prelude
local key, logs = KEYS[2], KEYS[3]
local h = load_job(key)
if not holds_lease(h, ARGV[2], ARGV[3]) then return 0 end
local changes = {}
if ARGV[4] ~= '' and ARGV[4] ~= h.progress then  -- progress health reads when and how often it moved
  changes.progress, changes.progressAt = ARGV[4], now_ms()
  changes.progressSteps = (tonumber(h.progressSteps) or 0) + 1
end
if ARGV[5] == '1' then changes.action = ARGV[6] end
if ARGV[10] == '1' then changes.state = ARGV[11] end  -- fenced with the rest: a stale worker cannot
if ARGV[7] == '1' then
  redis.call('RPUSH', logs, ARGV[8])
  redis.call('LTRIM', logs, -tonumber(ARGV[9]), -1)
end
save(key, h, changes, ARGV[1])
return 1
