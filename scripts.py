"""Lua scripts for every multi-key change, registered once per client by store.py.

Every job-changing script takes the same *queue block* as KEYS[1..16] (see `Keys.queue_block`):

    KEYS[1]      events stream (capped; its entry id is the SSE event id)
    KEYS[2]      the queue's wait list
    KEYS[3]      the queue's set of high-priority waiting ids
    KEYS[4]      the queue's delayed sorted set (score: run-at epoch ms)
    KEYS[5..10]  global status indexes, in models.STATUSES order
    KEYS[11..16] the queue's status indexes, same order

then its own keys. Each change bumps the job's `rev`, appends the event to the stream and publishes
it, in one atomic step, so listeners see a job's events in rev order. Time comes from Redis `TIME`,
one clock for every host. User text only ever arrives in ARGV.
"""

from __future__ import annotations

from models import API_FIELDS, STATUSES

QUEUE_BLOCK_SIZE = 16
EVENTS_CAP = 10_000

_lua_list = ", ".join(f"'{name}'" for name in API_FIELDS)
_lua_slots = ", ".join(f"{status} = {i}" for i, status in enumerate(STATUSES))

# Helpers shared by every script below (prepended to each).
_PRELUDE = f"""
local API_FIELDS = {{{_lua_list}}}
local RAW_FIELDS = {{data = true, result = true, progress = true, attemptsMade = true,
  maxAttempts = true, backoffMs = true, timeoutMs = true, createdAt = true, startedAt = true,
  finishedAt = true, runAt = true, rev = true}}
local STATUS_SLOT = {{{_lua_slots}}}

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function hgetall(key)
  local flat = redis.call('HGETALL', key)
  local h = {{}}
  for i = 1, #flat, 2 do h[flat[i]] = flat[i + 1] end
  return h, flat
end

-- The API's job JSON (no logs); models.Job.to_api gives the same.
local function job_json(h)
  local parts = {{}}
  for i, f in ipairs(API_FIELDS) do
    local v = h[f]
    if v == nil then v = 'null' elseif not RAW_FIELDS[f] then v = cjson.encode(v) end
    parts[i] = '"' .. f .. '":' .. v
  end
  return '{{' .. table.concat(parts, ',') .. '}}'
end

local function emit(channel, event, payload)
  local eid = redis.call('XADD', KEYS[1], 'MAXLEN', '~', {EVENTS_CAP}, '*', 'e', event, 'd', payload)
  redis.call('PUBLISH', channel, eid .. '\\n' .. event .. '\\n' .. payload)
  return eid
end

-- Bump rev, publish the job as it now is, and return its hash (flat) for the caller.
local function touch(job_key, channel)
  redis.call('HINCRBY', job_key, 'rev', 1)
  local h, flat = hgetall(job_key)
  emit(channel, 'job', '{{"job":' .. job_json(h) .. '}}')
  return flat
end

local function set_status(job_key, id, old, new)
  local seq = redis.call('HGET', job_key, 'seq')
  if old then
    redis.call('ZREM', KEYS[5 + STATUS_SLOT[old]], id)
    redis.call('ZREM', KEYS[11 + STATUS_SLOT[old]], id)
  end
  redis.call('ZADD', KEYS[5 + STATUS_SLOT[new]], seq, id)
  redis.call('ZADD', KEYS[11 + STATUS_SLOT[new]], seq, id)
  redis.call('HSET', job_key, 'status', new)
end

-- Into the wait list. Normal jobs join the tail; high ones (and jobs put back at the front) go
-- before the first normal job, so highs run first and keep FIFO order among themselves.
local function push_waiting(id, priority, front)
  if priority == 'high' then redis.call('SADD', KEYS[3], id) end
  if priority ~= 'high' and not front then
    redis.call('RPUSH', KEYS[2], id)
    return
  end
  local start = 0
  while true do
    local chunk = redis.call('LRANGE', KEYS[2], start, start + 99)
    if #chunk == 0 then redis.call('RPUSH', KEYS[2], id) return end
    for _, other in ipairs(chunk) do
      if redis.call('SISMEMBER', KEYS[3], other) == 0 then
        redis.call('LINSERT', KEYS[2], 'BEFORE', other, id)
        return
      end
    end
    start = start + 100
  end
end

local function remove_waiting(id)
  redis.call('LREM', KEYS[2], 1, id)
  redis.call('SREM', KEYS[3], id)
end

-- The caller's fencing check: still active, and still the attempt this worker claimed.
local function holds_lease(job_key, worker_id, token)
  local f = redis.call('HMGET', job_key, 'status', 'workerId', 'token')
  return f[1] == 'active' and f[2] == worker_id and f[3] == token
end
"""


def _script(body: str) -> str:
    return _PRELUDE + body


ENQUEUE = _script("""
-- KEYS[1..16] queue block, KEYS[17] job hash, KEYS[18] seq counter, KEYS[19] all-jobs index,
-- KEYS[20] queue jobs index, KEYS[21] type index, KEYS[22] set of queue names
-- ARGV[1] id, ARGV[2] job channel, ARGV[3] delay ms, ARGV[4] queue name, ARGV[5..] field/value pairs
-- Returns the job hash (flat), or an error if the id is taken.
if redis.call('EXISTS', KEYS[17]) == 1 then return redis.error_reply('ERR job id taken') end
local id = ARGV[1]
local delay = tonumber(ARGV[3])
local now = now_ms()
local seq = redis.call('INCR', KEYS[18])
redis.call('HSET', KEYS[17], unpack(ARGV, 5))
redis.call('HSET', KEYS[17], 'seq', seq, 'createdAt', now, 'rev', 0, 'token', 0)
redis.call('ZADD', KEYS[19], seq, id)
redis.call('ZADD', KEYS[20], seq, id)
redis.call('ZADD', KEYS[21], seq, id)
redis.call('SADD', KEYS[22], ARGV[4])
if delay > 0 then
  redis.call('HSET', KEYS[17], 'runAt', now + delay)
  redis.call('ZADD', KEYS[4], now + delay, id)
  set_status(KEYS[17], id, nil, 'delayed')
else
  set_status(KEYS[17], id, nil, 'waiting')
  push_waiting(id, redis.call('HGET', KEYS[17], 'priority'), false)
end
return touch(KEYS[17], ARGV[2])
""")

CLAIM = _script("""
-- KEYS[1..16] queue block, KEYS[17] this worker's processing list, KEYS[18..] job hashes
-- ARGV[1] worker id, then per job: ARGV[2i] id, ARGV[2i+1] job channel
-- For ids already moved into the processing list: waiting -> active. Returns the claimed jobs'
-- hashes (flat); an id whose job is gone or no longer waiting (cancelled in transit) is dropped.
local now = now_ms()
local claimed = {}
for i = 1, #KEYS - 17 do
  local key, id, channel = KEYS[17 + i], ARGV[2 * i], ARGV[2 * i + 1]
  if redis.call('HGET', key, 'status') ~= 'waiting' then
    redis.call('LREM', KEYS[17], 1, id)
  else
    redis.call('SREM', KEYS[3], id)
    set_status(key, id, 'waiting', 'active')
    redis.call('HSET', key, 'startedAt', now, 'workerId', ARGV[1])
    redis.call('HDEL', key, 'finishedAt', 'runAt', 'action')
    redis.call('HINCRBY', key, 'attemptsMade', 1)
    redis.call('HINCRBY', key, 'token', 1)
    claimed[#claimed + 1] = touch(key, channel)
  end
end
return claimed
""")

UPDATE = _script("""
-- KEYS[1] events stream, KEYS[2] job hash, KEYS[3] job logs
-- ARGV[1] job channel, ARGV[2] worker id, ARGV[3] lease token, ARGV[4] progress or '',
-- ARGV[5] '1' to set the action, ARGV[6] action text, ARGV[7] '1' to append a log line,
-- ARGV[8] log line, ARGV[9] log cap
-- Returns 1, or 0 when this worker no longer holds the job (cancelled, or recovered elsewhere).
if not holds_lease(KEYS[2], ARGV[2], ARGV[3]) then return 0 end
if ARGV[4] ~= '' then redis.call('HSET', KEYS[2], 'progress', ARGV[4]) end
if ARGV[5] == '1' then redis.call('HSET', KEYS[2], 'action', ARGV[6]) end
if ARGV[7] == '1' then
  redis.call('RPUSH', KEYS[3], ARGV[8])
  redis.call('LTRIM', KEYS[3], -tonumber(ARGV[9]), -1)
end
touch(KEYS[2], ARGV[1])
return 1
""")

COMPLETE = _script("""
-- KEYS[1..16] queue block, KEYS[17] processing list, KEYS[18] job hash, KEYS[19] worker hash
-- ARGV[1] id, ARGV[2] job channel, ARGV[3] worker id, ARGV[4] lease token, ARGV[5] result JSON
-- Returns 1, or 0 when the lease was lost (the newer owner's outcome stands).
redis.call('LREM', KEYS[17], 1, ARGV[1])
if not holds_lease(KEYS[18], ARGV[3], ARGV[4]) then return 0 end
set_status(KEYS[18], ARGV[1], 'active', 'completed')
redis.call('HSET', KEYS[18], 'finishedAt', now_ms(), 'progress', 100, 'result', ARGV[5])
redis.call('HDEL', KEYS[18], 'action')
redis.call('HINCRBY', KEYS[19], 'processed', 1)
touch(KEYS[18], ARGV[2])
return 1
""")

FAIL = _script("""
-- KEYS[1..16] queue block, KEYS[17] processing list, KEYS[18] job hash, KEYS[19] worker hash
-- ARGV[1] id, ARGV[2] job channel, ARGV[3] worker id, ARGV[4] lease token, ARGV[5] reason,
-- ARGV[6] '1' if the attempt may be retried
-- Retries after backoffMs * 2^(attemptsMade-1) while attempts remain, else fails the job.
-- Returns the new status, or '' when the lease was lost.
redis.call('LREM', KEYS[17], 1, ARGV[1])
if not holds_lease(KEYS[18], ARGV[3], ARGV[4]) then return '' end
local id, key = ARGV[1], KEYS[18]
local f = redis.call('HMGET', key, 'attemptsMade', 'maxAttempts', 'backoffMs')
local made, max, backoff = tonumber(f[1]), tonumber(f[2]), tonumber(f[3])
local now = now_ms()
local status
redis.call('HSET', key, 'failedReason', ARGV[5])
redis.call('HDEL', key, 'action')
redis.call('HINCRBY', KEYS[19], 'failed', 1)
if ARGV[6] == '1' and made < max then
  local run_at = now + backoff * math.pow(2, made - 1)
  status = 'delayed'
  set_status(key, id, 'active', status)
  redis.call('HSET', key, 'runAt', run_at)
  redis.call('ZADD', KEYS[4], run_at, id)
else
  status = 'failed'
  set_status(key, id, 'active', status)
  redis.call('HSET', key, 'finishedAt', now)
end
touch(key, ARGV[2])
return status
""")

REQUEUE = _script("""
-- KEYS[1..16] queue block, KEYS[17] a worker's processing list, KEYS[18..] job hashes
-- ARGV[1] that worker's id, ARGV[2] 'stalled' (worker died) or 'shutdown' (graceful stop),
-- ARGV[3] recoveries allowed, then per job: ARGV[2i+2] id, ARGV[2i+3] job channel
-- Puts the worker's jobs back at the front of the wait list. A job recovered from dead workers
-- more than ARGV[3] times fails as stalled. Returns how many jobs changed.
local changed = 0
for i = 1, #KEYS - 17 do
  local key, id, channel = KEYS[17 + i], ARGV[2 * i + 2], ARGV[2 * i + 3]
  if redis.call('LREM', KEYS[17], 1, id) == 1 then
    local f = redis.call('HMGET', key, 'status', 'workerId', 'priority')
    if f[1] == 'waiting' then
      -- moved but never claimed: just undo the move
      push_waiting(id, f[3], true)
    elseif f[1] == 'active' and f[2] == ARGV[1] then
      local reason = nil
      if ARGV[2] == 'stalled' then
        local n = redis.call('HINCRBY', key, 'recoveries', 1)
        if n > tonumber(ARGV[3]) then
          reason = 'stalled: its worker was lost ' .. n .. ' times while running it'
        end
      end
      redis.call('HDEL', key, 'action')
      if reason then
        set_status(key, id, 'active', 'failed')
        redis.call('HSET', key, 'failedReason', reason, 'finishedAt', now_ms())
      else
        set_status(key, id, 'active', 'waiting')
        push_waiting(id, f[3], true)
      end
      touch(key, channel)
      changed = changed + 1
    end
  end
end
return changed
""")

PROMOTE_DUE = _script("""
-- KEYS[1..16] queue block, KEYS[17..] job hashes of the earliest delayed ids
-- per job: ARGV[2i-1] id, ARGV[2i] job channel
-- Moves the due ones to waiting. Returns {promoted, ms until the next candidate is due or -1}.
local now = now_ms()
local promoted, wait_ms = 0, -1
for i = 1, #KEYS - 16 do
  local key, id, channel = KEYS[16 + i], ARGV[2 * i - 1], ARGV[2 * i]
  local due = redis.call('ZSCORE', KEYS[4], id)
  if due then
    due = tonumber(due)
    if due <= now then
      redis.call('ZREM', KEYS[4], id)
      if redis.call('HGET', key, 'status') == 'delayed' then
        set_status(key, id, 'delayed', 'waiting')
        redis.call('HDEL', key, 'runAt')
        push_waiting(id, redis.call('HGET', key, 'priority'), false)
        touch(key, channel)
        promoted = promoted + 1
      end
    elseif wait_ms < 0 or due - now < wait_ms then
      wait_ms = due - now
    end
  end
end
return {promoted, wait_ms}
""")

# -- API actions on one job: ARGV[1] id, ARGV[2] job channel; each returns {outcome, detail} -----

CANCEL = _script("""
-- KEYS[1..16] queue block, KEYS[17] job hash, KEYS[18] processing list of the job's worker
-- ARGV[1] id, ARGV[2] job channel, ARGV[3] that worker's control channel, ARGV[4] its id
-- Returns {'ok', hash}, {'missing'}, {'conflict', status} or {'moved'} (worker changed: read again).
local id, key = ARGV[1], KEYS[17]
local f = redis.call('HMGET', key, 'status', 'workerId')
local status = f[1]
if not status then return {'missing'} end
if status == 'waiting' then
  remove_waiting(id)
elseif status == 'delayed' then
  redis.call('ZREM', KEYS[4], id)
elseif status == 'active' then
  if f[2] ~= ARGV[4] then return {'moved'} end
  redis.call('LREM', KEYS[18], 1, id)
  redis.call('PUBLISH', ARGV[3], 'cancel ' .. id)
else
  return {'conflict', status}
end
set_status(key, id, status, 'cancelled')
redis.call('HSET', key, 'finishedAt', now_ms())
redis.call('HDEL', key, 'action', 'runAt')
return {'ok', touch(key, ARGV[2])}
""")

RETRY = _script("""
-- KEYS[1..16] queue block, KEYS[17] job hash
-- ARGV[1] id, ARGV[2] job channel
-- failed or cancelled -> waiting, with attemptsMade and progress back to 0.
local id, key = ARGV[1], KEYS[17]
local f = redis.call('HMGET', key, 'status', 'priority')
if not f[1] then return {'missing'} end
if f[1] ~= 'failed' and f[1] ~= 'cancelled' then return {'conflict', f[1]} end
set_status(key, id, f[1], 'waiting')
redis.call('HSET', key, 'attemptsMade', 0, 'progress', 0, 'recoveries', 0)
redis.call('HDEL', key, 'finishedAt', 'startedAt', 'action', 'result', 'runAt')
push_waiting(id, f[2], false)
return {'ok', touch(key, ARGV[2])}
""")

PROMOTE = _script("""
-- KEYS[1..16] queue block, KEYS[17] job hash
-- ARGV[1] id, ARGV[2] job channel
-- delayed -> waiting now.
local id, key = ARGV[1], KEYS[17]
local f = redis.call('HMGET', key, 'status', 'priority')
if not f[1] then return {'missing'} end
if f[1] ~= 'delayed' then return {'conflict', f[1]} end
redis.call('ZREM', KEYS[4], id)
set_status(key, id, 'delayed', 'waiting')
redis.call('HDEL', key, 'runAt')
push_waiting(id, f[2], false)
return {'ok', touch(key, ARGV[2])}
""")

SET_PRIORITY = _script("""
-- KEYS[1..16] queue block, KEYS[17] job hash
-- ARGV[1] id, ARGV[2] job channel, ARGV[3] 'normal' or 'high'
-- Only for waiting or delayed jobs; a waiting job moves to its new place in line.
local id, key = ARGV[1], KEYS[17]
local f = redis.call('HMGET', key, 'status', 'priority')
if not f[1] then return {'missing'} end
if f[1] ~= 'waiting' and f[1] ~= 'delayed' then return {'conflict', f[1]} end
redis.call('HSET', key, 'priority', ARGV[3])
if f[1] == 'waiting' and f[2] ~= ARGV[3] then
  remove_waiting(id)
  push_waiting(id, ARGV[3], false)
end
return {'ok', touch(key, ARGV[2])}
""")

DELETE = _script("""
-- KEYS[1..16] queue block, KEYS[17] job hash, KEYS[18] job logs, KEYS[19] all-jobs index,
-- KEYS[20] queue jobs index, KEYS[21] type index, KEYS[22] processing list of the job's worker
-- ARGV[1] id, ARGV[2] job channel, ARGV[3] that worker's control channel, ARGV[4] its id
-- Removes the job everywhere (stopping it first if active). Returns {'ok'}, {'missing'} or {'moved'}.
local id, key = ARGV[1], KEYS[17]
local f = redis.call('HMGET', key, 'status', 'workerId')
local status = f[1]
if not status then return {'missing'} end
if status == 'waiting' then
  remove_waiting(id)
elseif status == 'delayed' then
  redis.call('ZREM', KEYS[4], id)
elseif status == 'active' then
  if f[2] ~= ARGV[4] then return {'moved'} end
  redis.call('LREM', KEYS[22], 1, id)
  redis.call('PUBLISH', ARGV[3], 'cancel ' .. id)
end
redis.call('ZREM', KEYS[5 + STATUS_SLOT[status]], id)
redis.call('ZREM', KEYS[11 + STATUS_SLOT[status]], id)
redis.call('ZREM', KEYS[19], id)
redis.call('ZREM', KEYS[20], id)
redis.call('ZREM', KEYS[21], id)
redis.call('DEL', key, KEYS[18])
emit(ARGV[2], 'job-removed', cjson.encode({id = id}))
return {'ok'}
""")

HEARTBEAT = """
-- KEYS[1] workers sorted set, KEYS[2] this worker's hash
-- ARGV[1] worker id, ARGV[2..] field/value pairs
-- Stamps lastSeen with the Redis clock, the one every host shares.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[2], 'lastSeen', now, unpack(ARGV, 2))
redis.call('ZADD', KEYS[1], now, ARGV[1])
return now
"""
