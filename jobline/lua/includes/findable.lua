-- Finding jobs and grouping failures: indexes kept in the same step as the change they follow.
-- Expects QUEUE_STEM and JOB_PREFIX (queue_block.lua). Every index is in the queue's slot.
--
-- Names: a sorted set of "<id>\t<name, casefolded by Python>" scored by the job's seq, so a
-- search scans it newest first with no read of the job (search.lua); a job leaves it by its seq.
-- Tags: a sorted set per tag of the ids carrying it, scored by seq.
local NAMES = QUEUE_STEM .. 'names'
local function tag_index(tag) return QUEUE_STEM .. 'tag:' .. tag end

local function index_findable(id, seq, folded_name, tags_json)
  redis.call('ZADD', NAMES, seq, id .. '\t' .. folded_name)
  if tags_json and tags_json ~= '[]' then
    for _, tag in ipairs(cjson.decode(tags_json)) do redis.call('ZADD', tag_index(tag), seq, id) end
  end
end

local function unindex_findable(id, seq, tags_json)
  if seq then redis.call('ZREMRANGEBYSCORE', NAMES, seq, seq) end
  if tags_json and tags_json ~= '[]' then
    for _, tag in ipairs(cjson.decode(tags_json)) do redis.call('ZREM', tag_index(tag), id) end
  end
end

-- Failure groups. A failed attempt's fingerprint: its job type, the exception's class (the
-- reason's leading "Name: "), and the rest of the reason with quoted strings, numbers, hex and
-- ids replaced, so "order 123 not found" and "order 456 not found" are one group.
-- GROUPS scores each fingerprint by the number of jobs now failed whose last failure has it;
-- `fg:<fingerprint>` holds those ids (scored by seq); GROUP_INFO holds each group's type,
-- pattern, sample (its latest message) and first and last seen (epoch ms).
local GROUPS = QUEUE_STEM .. 'failure-groups'
local GROUP_INFO = QUEUE_STEM .. 'failure-info'
local function group_members(fp) return QUEUE_STEM .. 'fg:' .. fp end

local function placeholder(word)
  if not string.find(word, '%d') then return word end
  if string.find(word, '^[%d%.,:]+$') then return '<n>' end  -- numbers, times, addresses
  if #word >= 8 then return '<id>' end  -- ids, hashes, uuids, hex
  return (string.gsub(word, '%d+', '<n>'))  -- e.g. http2, v3
end

local function normalize(message)
  local s = string.gsub(message, "'[^']*'", "'?'")
  s = string.gsub(s, '"[^"]*"', '"?"')
  s = string.gsub(s, '0[xX]%x+', '<hex>')
  return (string.gsub(s, '[%w_%-%.:]+', placeholder))
end

local function fingerprint(job_type, reason)
  local class, message = string.match(reason, '^([%a_][%w_%.]*): (.*)$')
  if not class then class, message = '', reason end
  local pattern = normalize(message)
  return string.sub(redis.sha1hex(job_type .. '\n' .. class .. '\n' .. pattern), 1, 16), pattern
end

-- A failed attempt: its fingerprint goes in `changes` (saved by the caller); when the job is now
-- failed (changes.status), it joins its group.
local function mark_failure(h, changes, now)
  local fp, pattern = fingerprint(h.type or '', changes.failedReason or '')
  changes.failureGroup = fp
  if changes.status ~= 'failed' then return end
  redis.call('ZADD', group_members(fp), h.seq, h.id)
  if tonumber(redis.call('ZINCRBY', GROUPS, 1, fp)) == 1 then
    redis.call('HSET', GROUP_INFO, fp .. ':type', h.type or '', fp .. ':pattern', pattern, fp .. ':first', now)
  end
  redis.call('HSET', GROUP_INFO, fp .. ':sample', changes.failedReason or '', fp .. ':last', now)
end

-- A failed job that is retried or removed leaves its group; an empty group goes.
local function leave_failure_group(id, fp)
  if not fp then fp = redis.call('HGET', JOB_PREFIX .. id, 'failureGroup') end
  if not fp then return end
  if redis.call('ZREM', group_members(fp), id) == 0 then return end
  if tonumber(redis.call('ZINCRBY', GROUPS, -1, fp)) <= 0 then
    redis.call('ZREM', GROUPS, fp)
    redis.call('HDEL', GROUP_INFO, fp .. ':type', fp .. ':pattern', fp .. ':first', fp .. ':sample', fp .. ':last')
  end
end
