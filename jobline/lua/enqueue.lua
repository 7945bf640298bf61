-- KEYS[1..B] queue block, KEYS[B+1] queue jobs index,
-- then per job i: KEYS[B+2i] its hash, KEYS[B+1+2i] its type's index
-- ARGV[1] the batch's clock reading (µs) when it spans queues, else '' (now), then per job: id,
-- job channel, delay ms, its place in the batch, n, then n field/value pairs (with foldedName, the
-- casefolded name for the search index, which is not saved), m, then the ids of
-- its m children (a parent waits for them: `waiting-children`; they are created in the same
-- batch, maybe on other queues)
-- Creates every job or none (an id taken fails the call before any write). The queue's keys come
-- once per call, however many jobs: a batch costs one call per queue. A job's seq is its batch's
-- Redis time in µs plus its place (and more than the queue's last), so that listings merged across
-- queues come out newest first, a batch across queues in its order. A job whose
-- uniqueKey is held (queue_block.lua) is not created: the holder stands in its place.
-- Returns {1 if the queue had no seq yet (new, or deleted since: the caller registers its name),
-- {1 if created, 0 if a holder stands in, per job}, then per job: {status, createdAt, runAt or
-- ''} for one created (the caller has the rest), or the holder's hash (flat)}.
--@include queue_block
local queue_jobs = KEYS[BLOCK + 1]
local count = (#KEYS - BLOCK - 1) / 2
for i = 1, count do
  if redis.call('EXISTS', KEYS[BLOCK + 2 * i]) == 1 then return redis.error_reply('ERR job id taken') end
end
local time = redis.call('TIME')
local base = tonumber(ARGV[1]) or tonumber(time[1]) * 1000000 + tonumber(time[2])  -- exact as a double
local now = math.floor(base / 1000)  -- the batch's one clock reading: createdAt in its order too
local seq = tonumber(redis.call('HGET', META, 'seq'))
local out = {seq and 0 or 1, {}}
seq = seq or 0
local a = 2
for i = 1, count do
  local key, type_jobs = KEYS[BLOCK + 2 * i], KEYS[BLOCK + 1 + 2 * i]
  local id, channel, delay = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
  local place, n = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  local job = {}
  for j = a + 5, a + 4 + 2 * n, 2 do job[ARGV[j]] = ARGV[j + 1] end
  local folded_name = job.foldedName  -- for the search index only, not saved
  job.foldedName = nil
  a = a + 5 + 2 * n
  local child_ids = {unpack(ARGV, a + 1, a + tonumber(ARGV[a]))}
  a = a + 1 + #child_ids
  local holder = job.uniqueKey and unique_holder(job.uniqueKey, now)
  if holder then
    out[2][i] = 0
    local flat = {}
    for f, v in pairs(holder) do flat[#flat + 1] = f; flat[#flat + 1] = v end
    out[#out + 1] = flat
  else
    out[2][i] = 1
    seq = math.max(base + place, seq + 1)
    job.seq, job.createdAt, job.token = seq, now, 0
    redis.call('ZADD', queue_jobs, seq, id)
    redis.call('ZADD', type_jobs, seq, id)
    index_findable(id, seq, folded_name or '', job.tags)
    if #child_ids > 0 then
      job.status = 'waiting-children'
      redis.call('RPUSH', key .. ':children', unpack(child_ids))
    elseif delay > 0 then
      job.status, job.runAt = 'delayed', now + delay
      redis.call('ZADD', DELAYED, now + delay, id)
    else
      job.status = 'waiting'
      push_waiting(id, job.priority, false)
    end
    index_status(id, seq, nil, job.status)
    save_only(key, {}, job, channel)
    out[#out + 1] = {job.status, string.format('%d', now), job.runAt and string.format('%d', job.runAt) or ''}
    if job.uniqueKey then take_unique(job) end
  end
end
if seq > 0 then redis.call('HSET', META, 'seq', string.format('%d', seq)) end
return out
