"""Lua scripts for every multi-key change, registered once per client by store.py.

Every job-changing script takes the same *queue block* as KEYS[1..20] (see `Keys.queue_block`):

    KEYS[1]      events stream (capped; its entry id is the SSE event id)
    KEYS[2]      the queue's wait list (workers BLMOVE from it)
    KEYS[3]      the queue's set of high-priority waiting ids
    KEYS[4]      the queue's delayed sorted set (score: run-at epoch ms)
    KEYS[5]      the queue's paused list (waiting jobs live here while the queue is paused)
    KEYS[6]      the queue's meta hash (paused flag, totals, duration histogram)
    KEYS[7]      the queue's rate hash (per-second and per-minute rings of finished jobs)
    KEYS[8]      the queue's recent failures (capped list of JSON)
    KEYS[9..14]  global status indexes, in models.STATUSES order
    KEYS[15..20] the queue's status indexes, same order

then its own keys. Each change bumps the job's `rev`, appends the event to the stream and publishes
it, in one atomic step, so listeners see a job's events in rev order. Time comes from Redis `TIME`,
one clock for every host. User text only ever arrives in ARGV.
"""

from __future__ import annotations

from .models import API_FIELDS, STATUSES

QUEUE_BLOCK_SIZE = 20
EVENTS_CAP = 10_000
EVENTS_MAX_BYTES = 64 * 1024 * 1024  # the event log keeps at most this much (and EVENTS_CAP events)
EVENTS_TRIM_STEP = EVENTS_MAX_BYTES // 256  # how often (in bytes appended) the byte cap is checked
EVENT_FIELD_MAX = 4096  # an event's job leaves out data and result when either is longer
RECENT_FAILURES = 10
# Upper bounds (seconds) of the job duration histogram; +Inf is implied.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)

_lua_list = ", ".join(f"'{name}'" for name in API_FIELDS)
_lua_slots = ", ".join(f"{status} = {i}" for i, status in enumerate(STATUSES))

# Helpers shared by every script below (prepended to each).
_PRELUDE = f"""
local API_FIELDS = {{{_lua_list}}}
local RAW_FIELDS = {{data = true, result = true, progress = true, attemptsMade = true,
  maxAttempts = true, backoffMs = true, maxBackoffMs = true, timeoutMs = true, createdAt = true, startedAt = true,
  finishedAt = true, runAt = true, rev = true}}
local STATUS_SLOT = {{{_lua_slots}}}
local EVENTS = KEYS[1]

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A job's hash as a table of strings, read once: a script changes it in memory, then saves it.
local function load_job(key)
  local flat = redis.call('HGETALL', key)
  if #flat == 0 then return nil end
  local h = {{}}
  for i = 1, #flat, 2 do h[flat[i]] = flat[i + 1] end
  return h
end

-- The API's job JSON (no logs), as an event carries it; models.Job.to_api gives the same. Events
-- stay small: when data or result is over {EVENT_FIELD_MAX} bytes, both are left out and the job
-- says "dataOmitted" (the single-job view has them).
local function job_json(h)
  local omit = (h.data and #h.data > {EVENT_FIELD_MAX}) or (h.result and #h.result > {EVENT_FIELD_MAX})
  local parts = {{}}
  for _, f in ipairs(API_FIELDS) do
    if not (omit and (f == 'data' or f == 'result')) then
      local v = h[f]
      if v == nil then v = 'null' elseif not RAW_FIELDS[f] then v = cjson.encode(v) end
      parts[#parts + 1] = '"' .. f .. '":' .. v
    end
  end
  if omit then parts[#parts + 1] = '"dataOmitted":true' end
  return '{{' .. table.concat(parts, ',') .. '}}'
end

-- An event log entry is {{e = event, d = payload, n = bytes appended to the log up to its end}},
-- so the log holds the newest entry's n less where the oldest entry starts.
local function event_size(event, payload) return #event + #payload + 40 end

local function entry_end(entry)
  return entry and tonumber(entry[2][6]) or 0
end

local function entry_start(entry)
  return entry_end(entry) - event_size(entry[2][2], entry[2][4])
end

-- Trim the oldest events so that the log holds at most {EVENTS_MAX_BYTES} bytes. Checked only when
-- the running total crosses a {EVENTS_TRIM_STEP}-byte step (so not on every event), trimming to one
-- step under the cap, so the cap holds between checks.
local function trim_event_bytes(total, size)
  if math.floor(total / {EVENTS_TRIM_STEP}) == math.floor((total - size) / {EVENTS_TRIM_STEP}) then return end
  local floor = total - ({EVENTS_MAX_BYTES} - {EVENTS_TRIM_STEP})
  local oldest = redis.call('XRANGE', EVENTS, '-', '+', 'COUNT', 1)[1]
  if not oldest or entry_start(oldest) >= floor then return end
  local start = '-'
  while true do
    local batch = redis.call('XRANGE', EVENTS, start, '+', 'COUNT', 100)
    if #batch == 0 then return end
    for _, entry in ipairs(batch) do
      if entry_start(entry) >= floor then
        redis.call('XTRIM', EVENTS, 'MINID', entry[1])
        return
      end
    end
    start = '(' .. batch[#batch][1]
  end
end

local function emit(channel, event, payload)
  local size = event_size(event, payload)
  local total = entry_end(redis.call('XREVRANGE', EVENTS, '+', '-', 'COUNT', 1)[1]) + size
  local eid = redis.call('XADD', EVENTS, 'MAXLEN', '~', {EVENTS_CAP}, '*', 'e', event, 'd', payload,
    'n', string.format('%d', total))
  trim_event_bytes(total, size)
  redis.call('PUBLISH', channel, eid .. '\\n' .. event .. '\\n' .. payload)
  return eid
end

local function save(key, h, changes, channel)
  changes.rev = (tonumber(h.rev) or 0) + 1
  local set, del = {{}}, {{}}
  for f, v in pairs(changes) do
    if v == false then
      if h[f] ~= nil then del[#del + 1] = f; h[f] = nil end
    else
      if type(v) == 'number' then v = string.format('%d', v) end
      set[#set + 1] = f; set[#set + 1] = v; h[f] = v
    end
  end
  redis.call('HSET', key, unpack(set))
  if #del > 0 then redis.call('HDEL', key, unpack(del)) end
  emit(channel, 'job', '{{"job":' .. job_json(h) .. '}}')
  local flat = {{}}
  for f, v in pairs(h) do flat[#flat + 1] = f; flat[#flat + 1] = v end
  return flat
end

-- The fencing check: still active, and still the attempt this worker claimed.
local function holds_lease(h, worker_id, token)
  return h ~= nil and h.status == 'active' and h.workerId == worker_id and h.token == token
end
"""

_QUEUE_BLOCK = f"""
local WAIT, HIGH, DELAYED, PAUSED, META, RATE, FAILURES = KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local STATUS_KEYS, QUEUE_STATUS_KEYS = 9, 15  -- KEYS[x + slot] for a status's slot
local DURATION_BUCKETS = {{{", ".join(repr(b) for b in DURATION_BUCKETS)}}}

-- Move a job between status indexes (the global one and its queue's); nil old or new: only add
-- or only remove. The job's own `status` field is the caller's change to save.
local function index_status(id, seq, old, new)
  if old then
    redis.call('ZREM', KEYS[STATUS_KEYS + STATUS_SLOT[old]], id)
    redis.call('ZREM', KEYS[QUEUE_STATUS_KEYS + STATUS_SLOT[old]], id)
  end
  if new then
    redis.call('ZADD', KEYS[STATUS_KEYS + STATUS_SLOT[new]], seq, id)
    redis.call('ZADD', KEYS[QUEUE_STATUS_KEYS + STATUS_SLOT[new]], seq, id)
  end
end

-- Waiting jobs live in the wait list, or in the paused list while the queue is paused.
local function line()
  if redis.call('HGET', META, 'paused') == '1' then return PAUSED end
  return WAIT
end

-- Into line. Highs run before every normal job: a new high goes after the highs already waiting,
-- a new normal at the tail. A job put back (`front`, it was claimed before any waiting job of its
-- priority) goes first among its priority.
local function push_waiting(id, priority, front)
  local list = line()
  if priority == 'high' then
    redis.call('SADD', HIGH, id)
    if front then redis.call('LPUSH', list, id) return end
  elseif not front then
    redis.call('RPUSH', list, id)
    return
  end
  local start = 0
  while true do
    local chunk = redis.call('LRANGE', list, start, start + 99)
    if #chunk == 0 then redis.call('RPUSH', list, id) return end
    for _, other in ipairs(chunk) do
      if other ~= id and redis.call('SISMEMBER', HIGH, other) == 0 then
        redis.call('LINSERT', list, 'BEFORE', other, id)
        return
      end
    end
    start = start + 100
  end
end

local function remove_waiting(id)
  if redis.call('LREM', WAIT, 1, id) == 0 then redis.call('LREM', PAUSED, 1, id) end
  redis.call('SREM', HIGH, id)
end

-- Take a job out of line, or stop it if active (tell its worker, drop it from its processing
-- list). False if the job changed worker since the caller read it: the caller reads again.
local function withdraw(id, status, owner, expected_owner, processing, control_channel)
  if status == 'waiting' then
    remove_waiting(id)
  elseif status == 'delayed' then
    redis.call('ZREM', DELAYED, id)
  elseif status == 'active' then
    if owner ~= expected_owner then return false end
    redis.call('LREM', processing, 1, id)
    redis.call('PUBLISH', control_channel, 'cancel ' .. id)
  end
  return true
end

-- Claiming: an id moves from the wait list into a worker's processing list (BLMOVE, or LMOVE here),
-- then is marked active. Ids popped here have no key in KEYS: the job hash is the job key prefix
-- (keys.Keys.job_prefix, passed in ARGV) plus the id, and its channel that key plus ':progress'.
-- Mark one moved id active and publish it; nil (the id dropped) if the job is gone or no longer
-- waiting (cancelled in transit).
local function claim_moved(id, processing, worker_id, job_prefix, now)
  local key = job_prefix .. id
  local h = load_job(key)
  if not h or h.status ~= 'waiting' then
    redis.call('LREM', processing, 1, id)
    return nil
  end
  redis.call('SREM', HIGH, id)
  index_status(id, h.seq, 'waiting', 'active')
  return save(key, h, {{
    status = 'active', startedAt = now, workerId = worker_id,
    attemptsMade = (tonumber(h.attemptsMade) or 0) + 1, token = (tonumber(h.token) or 0) + 1,
    finishedAt = false, runAt = false, action = false,
  }}, key .. ':progress')
end

-- Claim the ids already moved, then waiting ones, until n jobs are claimed or the line is empty.
-- Returns their hashes (flat).
local function claim(moved, n, processing, worker_id, job_prefix)
  local now = now_ms()
  local claimed = {{}}
  for _, id in ipairs(moved) do
    -- A BLMOVE reply may come late (the worker was frozen): if a reaper has put the id back
    -- meanwhile, it is no longer in this worker's list, and the job stays where the reaper put it.
    if redis.call('LPOS', processing, id) then
      claimed[#claimed + 1] = claim_moved(id, processing, worker_id, job_prefix, now)
    end
  end
  while #claimed < n do
    local id = redis.call('LMOVE', WAIT, processing, 'LEFT', 'RIGHT')
    if not id then break end
    claimed[#claimed + 1] = claim_moved(id, processing, worker_id, job_prefix, now)
  end
  return claimed
end

-- Rings of per-second and per-minute counts: a slot is reset when its stamp is stale.
local function ring(prefix, t, size, outcome)
  local slot = prefix .. (t % size)
  if redis.call('HGET', RATE, slot .. ':t') ~= tostring(t) then
    redis.call('HSET', RATE, slot .. ':t', t, slot .. ':completed', 0, slot .. ':failed', 0)
  end
  redis.call('HINCRBY', RATE, slot .. ':' .. outcome, 1)
end

-- Totals, throughput rings, and (completed) the duration histogram; (failed) the recent failures.
-- `h`: the job as saved.
local function count_finished(h, outcome, now)
  redis.call('HINCRBY', META, outcome .. 'Total', 1)
  local sec = math.floor(now / 1000)
  ring('s', sec, 120, outcome)
  ring('m', math.floor(sec / 60), 60, outcome)
  if outcome == 'failed' then
    local entry = cjson.encode({{id = h.id, name = h.name, failedReason = h.failedReason, at = now}})
    redis.call('LPUSH', FAILURES, entry)
    redis.call('LTRIM', FAILURES, 0, {RECENT_FAILURES - 1})
  elseif h.startedAt then
    local seconds = (now - tonumber(h.startedAt)) / 1000
    local bucket = '+Inf'
    for _, le in ipairs(DURATION_BUCKETS) do
      if seconds <= le then bucket = tostring(le) break end
    end
    redis.call('HINCRBY', META, 'duration:' .. bucket, 1)
    redis.call('HINCRBYFLOAT', META, 'durationSum', seconds)
  end
end

-- An active job back to waiting, at the front of its priority's line; `stalled` (its worker was
-- lost) counts a recovery, and a job recovered more than `max_recoveries` times fails as stalled.
local function put_back(id, key, h, channel, stalled, max_recoveries)
  local changes = {{action = false}}
  if stalled then
    changes.recoveries = (tonumber(h.recoveries) or 0) + 1
    if changes.recoveries > max_recoveries then
      changes.failedReason = 'stalled: its worker was lost ' .. changes.recoveries .. ' times while running it'
    end
  end
  local now = nil
  if changes.failedReason then
    now = now_ms()
    changes.status, changes.finishedAt = 'failed', now
  else
    changes.status = 'waiting'
    push_waiting(id, h.priority, true)
  end
  index_status(id, h.seq, 'active', changes.status)
  save(key, h, changes, channel)
  if now then count_finished(h, 'failed', now) end
end
"""


def _script(body: str) -> str:
    return _PRELUDE + body


def _queue_script(body: str) -> str:
    return _PRELUDE + _QUEUE_BLOCK + body


ENQUEUE = _queue_script("""
-- KEYS[1..20] queue block, KEYS[21] job hash, KEYS[22] seq counter, KEYS[23] all-jobs index,
-- KEYS[24] queue jobs index, KEYS[25] type index, KEYS[26] set of queue names
-- ARGV[1] id, ARGV[2] job channel, ARGV[3] delay ms, ARGV[4] queue name, ARGV[5..] field/value pairs
-- Returns the job hash (flat), or an error if the id is taken.
local key, id, delay = KEYS[21], ARGV[1], tonumber(ARGV[3])
if redis.call('EXISTS', key) == 1 then return redis.error_reply('ERR job id taken') end
local now = now_ms()
local seq = redis.call('INCR', KEYS[22])
local job = {}
for i = 5, #ARGV, 2 do job[ARGV[i]] = ARGV[i + 1] end
job.seq, job.createdAt, job.token = seq, now, 0
redis.call('ZADD', KEYS[23], seq, id)
redis.call('ZADD', KEYS[24], seq, id)
redis.call('ZADD', KEYS[25], seq, id)
redis.call('SADD', KEYS[26], ARGV[4])
if delay > 0 then
  job.status, job.runAt = 'delayed', now + delay
  redis.call('ZADD', DELAYED, now + delay, id)
else
  job.status = 'waiting'
  push_waiting(id, job.priority, false)
end
index_status(id, seq, nil, job.status)
return save(key, {}, job, ARGV[2])
""")

CLAIM = _queue_script("""
-- KEYS[1..20] queue block, KEYS[21] this worker's processing list
-- ARGV[1] worker id, ARGV[2] job key prefix, ARGV[3] how many jobs to claim in all,
-- ARGV[4..] ids already moved into the processing list (by BLMOVE)
-- Marks the moved ids active, then moves and claims waiting ones: one round trip fills every free
-- slot. Returns the claimed jobs' hashes (flat).
return claim({unpack(ARGV, 4)}, tonumber(ARGV[3]), KEYS[21], ARGV[1], ARGV[2])
""")

UPDATE = _script("""
-- KEYS[1] events stream, KEYS[2] job hash, KEYS[3] job logs
-- ARGV[1] job channel, ARGV[2] worker id, ARGV[3] lease token, ARGV[4] progress or '',
-- ARGV[5] '1' to set the action, ARGV[6] action text, ARGV[7] '1' to append a log line,
-- ARGV[8] log line, ARGV[9] log cap
-- Returns 1, or 0 when this worker no longer holds the job (cancelled, or recovered elsewhere).
local h = load_job(KEYS[2])
if not holds_lease(h, ARGV[2], ARGV[3]) then return 0 end
local changes = {}
if ARGV[4] ~= '' then changes.progress = ARGV[4] end
if ARGV[5] == '1' then changes.action = ARGV[6] end
if ARGV[7] == '1' then
  redis.call('RPUSH', KEYS[3], ARGV[8])
  redis.call('LTRIM', KEYS[3], -tonumber(ARGV[9]), -1)
end
save(KEYS[2], h, changes, ARGV[1])
return 1
""")

COMPLETE = _queue_script("""
-- KEYS[1..20] queue block, KEYS[21] processing list, KEYS[22] job hash, KEYS[23] worker hash
-- ARGV[1] id, ARGV[2] job channel, ARGV[3] worker id, ARGV[4] lease token, ARGV[5] result JSON,
-- ARGV[6] how many waiting jobs to claim for the freed slot (0 or 1), ARGV[7] job key prefix
-- Returns {1, or 0 when the lease was lost (the newer owner's outcome stands); the jobs claimed}.
-- Claiming in the ack saves the worker a round trip per job.
local key, id = KEYS[22], ARGV[1]
redis.call('LREM', KEYS[21], 1, id)
local claim_next = function() return claim({}, tonumber(ARGV[6]), KEYS[21], ARGV[3], ARGV[7]) end
local h = load_job(key)
if not holds_lease(h, ARGV[3], ARGV[4]) then return {0, claim_next()} end
local now = now_ms()
index_status(id, h.seq, 'active', 'completed')
redis.call('HINCRBY', KEYS[23], 'processed', 1)
save(key, h, {status = 'completed', finishedAt = now, progress = 100, result = ARGV[5], action = false}, ARGV[2])
count_finished(h, 'completed', now)
return {1, claim_next()}
""")

FAIL = _queue_script("""
-- KEYS[1..20] queue block, KEYS[21] processing list, KEYS[22] job hash, KEYS[23] worker hash
-- ARGV[1] id, ARGV[2] job channel, ARGV[3] worker id, ARGV[4] lease token, ARGV[5] reason,
-- ARGV[6] '1' if the attempt may be retried, ARGV[7] how many waiting jobs to claim for the freed
-- slot (0 or 1), ARGV[8] job key prefix
-- Retries after backoffMs * 2^(attemptsMade-1) while attempts remain, else fails the job.
-- Returns {the new status, or '' when the lease was lost; the jobs claimed}.
local key, id = KEYS[22], ARGV[1]
redis.call('LREM', KEYS[21], 1, id)
local claim_next = function() return claim({}, tonumber(ARGV[7]), KEYS[21], ARGV[3], ARGV[8]) end
local h = load_job(key)
if not holds_lease(h, ARGV[3], ARGV[4]) then return {'', claim_next()} end
local made, max, backoff = tonumber(h.attemptsMade), tonumber(h.maxAttempts), tonumber(h.backoffMs)
local max_backoff = tonumber(h.maxBackoffMs) or 3600000  -- models.DEFAULT_MAX_BACKOFF_MS (jobs from before it)
local now = now_ms()
local changes = {failedReason = ARGV[5], action = false}
redis.call('HINCRBY', KEYS[23], 'failed', 1)
if ARGV[6] == '1' and made < max then
  -- capped before it can overflow: runAt is always a valid date
  changes.status, changes.runAt = 'delayed', now + math.min(backoff * math.pow(2, math.min(made - 1, 60)), max_backoff)
  redis.call('ZADD', DELAYED, changes.runAt, id)
else
  changes.status, changes.finishedAt = 'failed', now
end
index_status(id, h.seq, 'active', changes.status)
save(key, h, changes, ARGV[2])
if changes.status == 'failed' then count_finished(h, 'failed', now) end
return {changes.status, claim_next()}
""")

REQUEUE = _queue_script("""
-- KEYS[1..20] queue block, KEYS[21] a worker's processing list, KEYS[22..] job hashes
-- ARGV[1] that worker's id, ARGV[2] 'stalled' (worker died), 'shutdown' (graceful stop) or
-- 'unclaimed' (only undo moves not yet marked active), ARGV[3] recoveries allowed,
-- then per job: ARGV[2i+2] id, ARGV[2i+3] job channel
-- Puts the worker's jobs back at the front of their priority's line, in their original order
-- (hence the walk from the last claimed to the first). A job recovered from dead workers more
-- than ARGV[3] times fails as stalled. Returns how many jobs changed state.
local processing, mode = KEYS[21], ARGV[2]
local changed = 0
for i = #KEYS - 21, 1, -1 do
  local key, id, channel = KEYS[21 + i], ARGV[2 * i + 2], ARGV[2 * i + 3]
  local h = load_job(key)
  local status = h and h.status
  local mine = status == 'active' and h.workerId == ARGV[1]
  if status == 'waiting' or not status or (mode ~= 'unclaimed' and not mine) then
    -- moved but never marked active: undo the move; gone or not ours any more: just forget it
    if redis.call('LREM', processing, 1, id) == 1 and status == 'waiting' then
      push_waiting(id, h.priority, true)
    end
  elseif mine and mode ~= 'unclaimed' and redis.call('LREM', processing, 1, id) == 1 then
    put_back(id, key, h, channel, mode == 'stalled', tonumber(ARGV[3]))
    changed = changed + 1
  end
end
return changed
""")

RECOVER_ORPHANS = _queue_script("""
-- KEYS[1..20] queue block, KEYS[21] workers sorted set,
-- then per job: KEYS[20+2i] job hash, KEYS[21+2i] the processing list of the worker it names
-- ARGV[1] min age ms, ARGV[2] recoveries allowed,
-- then per job: ARGV[3i] id, ARGV[3i+1] job channel, ARGV[3i+2] the worker it names
-- The reaper's consistency check: an active job whose worker is gone (not registered) has lost
-- its worker, whatever its processing list says; put it back as stalled. Only jobs claimed more
-- than ARGV[1] ms ago: a worker that a reaper wrongly gave up on re-registers within its lease.
-- Returns how many jobs changed state.
local workers, min_age, max_recoveries = KEYS[21], tonumber(ARGV[1]), tonumber(ARGV[2])
local now = now_ms()
local changed = 0
for i = 1, (#KEYS - 21) / 2 do
  local key, processing = KEYS[20 + 2 * i], KEYS[21 + 2 * i]
  local id, channel, worker_id = ARGV[3 * i], ARGV[3 * i + 1], ARGV[3 * i + 2]
  local h = load_job(key)
  if h and h.status == 'active' and h.workerId == worker_id
      and not redis.call('ZSCORE', workers, worker_id)
      and now - (tonumber(h.startedAt) or 0) > min_age then
    redis.call('LREM', processing, 1, id)
    put_back(id, key, h, channel, true, max_recoveries)
    changed = changed + 1
  end
end
return changed
""")

PROMOTE_DUE = _queue_script("""
-- KEYS[1..20] queue block, KEYS[21..] job hashes of the earliest delayed ids
-- per job: ARGV[2i-1] id, ARGV[2i] job channel
-- Moves the due ones to waiting. Returns {promoted, ms until the next candidate is due or -1}.
local now = now_ms()
local promoted, wait_ms = 0, -1
for i = 1, #KEYS - 20 do
  local key, id, channel = KEYS[20 + i], ARGV[2 * i - 1], ARGV[2 * i]
  local due = redis.call('ZSCORE', DELAYED, id)
  if due then
    due = tonumber(due)
    if due <= now then
      redis.call('ZREM', DELAYED, id)
      local h = load_job(key)
      if h and h.status == 'delayed' then
        index_status(id, h.seq, 'delayed', 'waiting')
        push_waiting(id, h.priority, false)
        save(key, h, {status = 'waiting', runAt = false}, channel)
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

CANCEL = _queue_script("""
-- KEYS[1..20] queue block, KEYS[21] job hash, KEYS[22] processing list of the job's worker
-- ARGV[1] id, ARGV[2] job channel, ARGV[3] that worker's control channel, ARGV[4] its id
-- Returns {'ok', hash}, {'missing'}, {'conflict', status} or {'moved'} (worker changed: read again).
local id, key = ARGV[1], KEYS[21]
local h = load_job(key)
if not h then return {'missing'} end
local status = h.status
if status ~= 'waiting' and status ~= 'delayed' and status ~= 'active' then return {'conflict', status} end
if not withdraw(id, status, h.workerId, ARGV[4], KEYS[22], ARGV[3]) then return {'moved'} end
index_status(id, h.seq, status, 'cancelled')
return {'ok', save(key, h, {status = 'cancelled', finishedAt = now_ms(), action = false, runAt = false}, ARGV[2])}
""")

RETRY = _queue_script("""
-- KEYS[1..20] queue block, KEYS[21] job hash
-- ARGV[1] id, ARGV[2] job channel
-- failed or cancelled -> waiting, with attemptsMade and progress back to 0.
local id, key = ARGV[1], KEYS[21]
local h = load_job(key)
if not h then return {'missing'} end
if h.status ~= 'failed' and h.status ~= 'cancelled' then return {'conflict', h.status} end
index_status(id, h.seq, h.status, 'waiting')
push_waiting(id, h.priority, false)
return {'ok', save(key, h, {
  status = 'waiting', attemptsMade = 0, progress = 0, recoveries = 0,
  finishedAt = false, startedAt = false, action = false, result = false, runAt = false,
}, ARGV[2])}
""")

PROMOTE = _queue_script("""
-- KEYS[1..20] queue block, KEYS[21] job hash
-- ARGV[1] id, ARGV[2] job channel
-- delayed -> waiting now.
local id, key = ARGV[1], KEYS[21]
local h = load_job(key)
if not h then return {'missing'} end
if h.status ~= 'delayed' then return {'conflict', h.status} end
redis.call('ZREM', DELAYED, id)
index_status(id, h.seq, 'delayed', 'waiting')
push_waiting(id, h.priority, false)
return {'ok', save(key, h, {status = 'waiting', runAt = false}, ARGV[2])}
""")

SET_PRIORITY = _queue_script("""
-- KEYS[1..20] queue block, KEYS[21] job hash
-- ARGV[1] id, ARGV[2] job channel, ARGV[3] 'normal' or 'high'
-- Only for waiting or delayed jobs; a waiting job moves to its new place in line.
local id, key = ARGV[1], KEYS[21]
local h = load_job(key)
if not h then return {'missing'} end
if h.status ~= 'waiting' and h.status ~= 'delayed' then return {'conflict', h.status} end
if h.status == 'waiting' and h.priority ~= ARGV[3] then
  remove_waiting(id)
  push_waiting(id, ARGV[3], false)
end
return {'ok', save(key, h, {priority = ARGV[3]}, ARGV[2])}
""")

DELETE = _queue_script("""
-- KEYS[1..20] queue block, KEYS[21] job hash, KEYS[22] job logs, KEYS[23] all-jobs index,
-- KEYS[24] queue jobs index, KEYS[25] type index, KEYS[26] processing list of the job's worker
-- ARGV[1] id, ARGV[2] job channel, ARGV[3] that worker's control channel, ARGV[4] its id,
-- ARGV[5] the status it must have, or '' for any
-- Removes the job everywhere (stopping it first if active).
-- Returns {'ok'}, {'missing'}, {'moved'} or {'conflict', status}.
local id, key = ARGV[1], KEYS[21]
local f = redis.call('HMGET', key, 'status', 'workerId')
local status = f[1]
if not status then return {'missing'} end
if ARGV[5] ~= '' and status ~= ARGV[5] then return {'conflict', status} end
if not withdraw(id, status, f[2], ARGV[4], KEYS[26], ARGV[3]) then return {'moved'} end
index_status(id, nil, status, nil)
redis.call('ZREM', KEYS[23], id)
redis.call('ZREM', KEYS[24], id)
redis.call('ZREM', KEYS[25], id)
redis.call('DEL', key, KEYS[22])
emit(ARGV[2], 'job-removed', cjson.encode({id = id}))
return {'ok'}
""")

SET_PAUSED = _queue_script("""
-- KEYS[1..20] queue block
-- ARGV[1] queue name, ARGV[2] queue channel, ARGV[3] '1' to pause, '0' to resume
-- Pausing moves the waiting line aside, so BLMOVE on the wait list hands out nothing; resuming
-- moves it back. Active jobs are untouched. Publishes {"name", "paused"}.
local pause = ARGV[3] == '1'
local from, to = WAIT, PAUSED
if not pause then from, to = PAUSED, WAIT end
if pause then redis.call('HSET', META, 'paused', '1') else redis.call('HDEL', META, 'paused') end
if redis.call('EXISTS', to) == 0 then
  if redis.call('EXISTS', from) == 1 then redis.call('RENAME', from, to) end
else
  while redis.call('LMOVE', from, to, 'LEFT', 'RIGHT') do end
end
emit(ARGV[2], 'queue', cjson.encode({name = ARGV[1], paused = pause}))
return 1
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
