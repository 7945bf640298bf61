-- The queue block: the keys every job-changing script gets first, as KEYS[1..BLOCK], in the order
-- of keys.Keys.queue_block, all in the queue's slot. A script's own keys follow, from KEYS[BLOCK+1]
-- (the headers write B for BLOCK).
local BLOCK = {{QUEUE_BLOCK_SIZE}}
-- Helpers for the waiting line, the status indexes, claiming, and the queue's counters.
--@include prelude
-- KEYS[1], the queue's event log, is EVENTS (prelude).
local WAIT = KEYS[2]  -- the wait list (workers BLMOVE from it)
local HIGH = KEYS[3]  -- set of high-priority waiting ids
local DELAYED = KEYS[4]  -- sorted set of delayed ids (score: run-at epoch ms)
local PAUSED = KEYS[5]  -- the paused list (waiting jobs live here while the queue is paused)
local META = KEYS[6]  -- meta hash (paused flag, last seq, totals, duration histogram)
local RATE = KEYS[7]  -- per-second and per-minute rings of finished jobs
local FAILURES = KEYS[8]  -- recent failures (capped list of JSON)
-- The queue's index of each status (KEYS[9..BLOCK]), in STATUS_SLOT order.
local STATUS_INDEX = {}
for status, slot in pairs(STATUS_SLOT) do STATUS_INDEX[status] = KEYS[9 + slot] end
local DURATION_BUCKETS = {{DURATION_BUCKETS}}
-- The queue's key names share a stem, `<prefix>:{tag}:queue:<name>:` (META is the stem plus
-- 'meta'), and its jobs' hashes are `<prefix>:{tag}:job:<id>` (keys.Keys): names built from them
-- stay in the queue's slot.
local QUEUE_STEM = string.sub(META, 1, -5)
local JOB_PREFIX = string.match(QUEUE_STEM, '^(.*:{%x+}:)queue:') .. 'job:'
local UNFINISHED = {waiting = true, delayed = true, active = true, ['waiting-children'] = true}

--@include findable

-- Uniqueness: a key per uniqueKey (keys.Keys.unique), holding "<job id> <until ms>": taken while
-- its job is unfinished, and until `until` (creation plus uniqueForMs) even once it finished.
local function unique_name(unique_key)
  return QUEUE_STEM .. 'unique:' .. redis.sha1hex(unique_key)
end

-- The job that holds `unique_key` now, or nil: free, or stale (its job finished and its window
-- ran out, or its job is gone).
local function unique_holder(unique_key, now)
  local held = redis.call('GET', unique_name(unique_key))
  if not held then return nil end
  local id, until_ms = string.match(held, '^(%S+) (%d+)$')
  local h = id and load_job(JOB_PREFIX .. id)
  if h and (UNFINISHED[h.status] or now < tonumber(until_ms)) then return h end
  return nil
end

local function take_unique(h)
  local until_ms = (tonumber(h.createdAt) or 0) + (tonumber(h.uniqueForMs) or 0)
  redis.call('SET', unique_name(h.uniqueKey), h.id .. ' ' .. string.format('%d', until_ms))
end

-- The job `h` finished (or, `removed`, is gone): its key is free now, or when its window ends.
local function release_unique(h, now, removed)
  if not h.uniqueKey then return end
  local name = unique_name(h.uniqueKey)
  local held = redis.call('GET', name)
  local id, until_ms = string.match(held or '', '^(%S+) (%d+)$')
  if id ~= h.id then return end  -- another job holds it now
  until_ms = tonumber(until_ms)
  if removed or until_ms <= now then redis.call('DEL', name) else redis.call('PEXPIREAT', name, until_ms) end
end

-- Move a job between status indexes; nil old or new: only add or only remove. The job's own
-- `status` field is the caller's change to save. A job that stops being failed leaves its failure
-- group (one that becomes failed joins it in mark_failure, which knows the reason).
local function index_status(id, seq, old, new)
  if old then redis.call('ZREM', STATUS_INDEX[old], id) end
  if old == 'failed' and new ~= 'failed' then leave_failure_group(id) end
  if new then redis.call('ZADD', STATUS_INDEX[new], seq, id) end
end

-- Waiting jobs live in the wait list, or in the paused list while the queue is paused (read once
-- per script call: only set_paused.lua changes it, and it does not push).
local PAUSED_NOW = nil
local function line()
  if PAUSED_NOW == nil then PAUSED_NOW = redis.call('HGET', META, 'paused') == '1' end
  if PAUSED_NOW then return PAUSED end
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
-- list). False if the job changed worker since the caller read it: the caller reads again. The
-- message names the attempt (its lease token): one that arrives late, after the job was retried
-- and claimed again, does not stop the new attempt.
local function withdraw(id, status, owner, expected_owner, processing, control_channel, token)
  if status == 'waiting' then
    remove_waiting(id)
  elseif status == 'delayed' then
    redis.call('ZREM', DELAYED, id)
  elseif status == 'active' then
    if owner ~= expected_owner then return false end
    redis.call('LREM', processing, 1, id)
    redis.call('PUBLISH', control_channel, 'cancel ' .. id .. ' ' .. (token or ''))
  end
  return true
end

-- Flows: a child that finishes (or is cancelled or removed unfinished) tells its parent through the
-- queue's outbox, in the same step: the parent may live on another shard, so its update is a second
-- step (flow_step.lua, run by whoever finished the child, and by every worker's sweep), which
-- applies each child once. An entry stays in the outbox until its parent has it: nothing is lost
-- to a crash between the two steps.
local OUTBOX = QUEUE_STEM .. 'outbox'

local function notify_parent(h, outcome, reason)
  if not h.parentId then return end
  redis.call('RPUSH', OUTBOX, cjson.encode({
    p = h.parentId, q = h.parentQueue, c = h.id, o = outcome, r = reason or '', f = h.onFailure or 'fail-parent',
  }))
end

--@include retention
--@include limits

-- Claiming: an id moves from the wait list into a worker's processing list (BLMOVE, or LMOVE here),
-- then is marked active. Ids popped here have no key in KEYS: the job hash is the job key prefix
-- (keys.Keys.job_prefix, passed in ARGV, in the queue's slot: the id carries the queue's tag) plus
-- the id, and its channel the channel prefix plus the id plus ':progress' (keys.Keys.job_channel).
-- Mark one moved id active and publish it; nil (the id dropped) if the job is gone or no longer
-- waiting (cancelled in transit).
local function claim_moved(id, processing, worker_id, job_prefix, channel_prefix, now)
  local key = job_prefix .. id
  local h = load_job(key)
  if not h or h.status ~= 'waiting' then
    redis.call('LREM', processing, 1, id)
    return nil
  end
  redis.call('SREM', HIGH, id)
  index_status(id, h.seq, 'waiting', 'active')
  local token = (tonumber(h.token) or 0) + 1
  record_start(id, token, now)
  return save(key, h, {
    status = 'active', startedAt = now, workerId = worker_id,
    attemptsMade = (tonumber(h.attemptsMade) or 0) + 1, token = token,
    finishedAt = false, runAt = false, action = false, progressSteps = 0,
  }, channel_prefix .. id .. ':progress')
end

-- Claim the ids already moved, then waiting ones, until n jobs are claimed, the line is empty or
-- the queue's limits allow no more (a moved id they hold back goes back to the front of the line).
-- Returns their hashes (flat), and how long (ms) the limits hold the queue back (0: they do not).
local function claim(moved, n, processing, worker_id, job_prefix, channel_prefix)
  local claimed = {}
  if n == 0 and #moved == 0 then return claimed, 0 end
  local now = now_ms()
  local room, hold = allowance(now)
  n = math.min(n, room)
  for _, id in ipairs(moved) do
    -- A BLMOVE reply may come late (the worker was frozen): if a reaper has put the id back
    -- meanwhile, it is no longer in this worker's list, and the job stays where the reaper put it.
    if not redis.call('LPOS', processing, id) then
      -- nothing to do
    elseif #claimed < n then
      claimed[#claimed + 1] = claim_moved(id, processing, worker_id, job_prefix, channel_prefix, now)
    else
      redis.call('LREM', processing, 1, id)
      push_waiting(id, redis.call('HGET', job_prefix .. id, 'priority'), true)
    end
  end
  while #claimed < n do
    local id = redis.call('LMOVE', WAIT, processing, 'LEFT', 'RIGHT')
    if not id then break end
    claimed[#claimed + 1] = claim_moved(id, processing, worker_id, job_prefix, channel_prefix, now)
  end
  return claimed, hold
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
    local entry = cjson.encode({id = h.id, name = h.name, failedReason = h.failedReason, at = now})
    redis.call('LPUSH', FAILURES, entry)
    redis.call('LTRIM', FAILURES, 0, {{RECENT_FAILURES}} - 1)
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
  local changes = {action = false}
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
    mark_failure(h, changes, now)
  else
    changes.status = 'waiting'
    push_waiting(id, h.priority, true)
  end
  index_status(id, h.seq, 'active', changes.status)
  save(key, h, changes, channel)
  if now then
    count_finished(h, 'failed', now)
    release_unique(h, now, false)
    notify_parent(h, 'failed', changes.failedReason)
    retain_count('failed')
  end
end
