-- Helpers shared by every job script: the Redis clock, reading and saving a job, its event JSON,
-- the capped event log, and the lease check. Expects KEYS[1] to be the queue's event log.
-- A name in double braces is a constant from Python (scripts.CONSTANTS), substituted on load.
local API_FIELDS = {{API_FIELDS}}
local RAW_FIELDS = {{RAW_API_FIELDS}}
local STATUS_SLOT = {{STATUS_SLOT}}
local EVENTS = KEYS[1]

--@include clock

-- A job's hash as a table of strings, read once: a script changes it in memory, then saves it.
local function load_job(key)
  local flat = redis.call('HGETALL', key)
  if #flat == 0 then return nil end
  local h = {}
  for i = 1, #flat, 2 do h[flat[i]] = flat[i + 1] end
  return h
end

-- The API's job JSON (no logs), as an event carries it; models.Job.to_api gives the same. Events
-- stay small: when data or result is over EVENT_FIELD_MAX bytes, both are left out and the job
-- says "dataOmitted" (the single-job view has them).
local function job_json(h)
  local omit = (h.data and #h.data > {{EVENT_FIELD_MAX}}) or (h.result and #h.result > {{EVENT_FIELD_MAX}})
  local parts = {}
  for _, f in ipairs(API_FIELDS) do
    if not (omit and (f == 'data' or f == 'result')) then
      local v = h[f]
      if v == nil then v = 'null' elseif not RAW_FIELDS[f] then v = cjson.encode(v) end
      parts[#parts + 1] = '"' .. f .. '":' .. v
    end
  end
  if omit then parts[#parts + 1] = '"dataOmitted":true' end
  return '{' .. table.concat(parts, ',') .. '}'
end

-- An event log entry is {e = event, d = payload, n = bytes appended to the log up to its end},
-- so the log holds the newest entry's n less where the oldest entry starts.
local function event_size(event, payload) return #event + #payload + 40 end

local function entry_end(entry)
  return entry and tonumber(entry[2][6]) or 0
end

local function entry_start(entry)
  return entry_end(entry) - event_size(entry[2][2], entry[2][4])
end

-- Trim the oldest events so that the log holds at most EVENTS_MAX_BYTES bytes. Checked only when
-- the running total crosses an EVENTS_TRIM_STEP-byte step (so not on every event), trimming to one
-- step under the cap, so the cap holds between checks.
local function trim_event_bytes(total, size)
  if math.floor(total / {{EVENTS_TRIM_STEP}}) == math.floor((total - size) / {{EVENTS_TRIM_STEP}}) then return end
  local floor = total - ({{EVENTS_MAX_BYTES}} - {{EVENTS_TRIM_STEP}})
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

-- Append an event to the queue's log and publish it as "queue\nentry id\nevent\npayload": the
-- stream's cursor is a position per queue.
local LOG_END = nil  -- the log's running byte total: read once per script call, then kept here

local function emit(channel, event, payload, queue)
  local size = event_size(event, payload)
  if LOG_END == nil then LOG_END = entry_end(redis.call('XREVRANGE', EVENTS, '+', '-', 'COUNT', 1)[1]) end
  local total = LOG_END + size
  LOG_END = total
  local eid = redis.call('XADD', EVENTS, 'MAXLEN', '~', {{EVENTS_CAP}}, '*', 'e', event, 'd', payload,
    'n', string.format('%d', total))
  trim_event_bytes(total, size)
  redis.call('PUBLISH', channel, queue .. '\n' .. eid .. '\n' .. event .. '\n' .. payload)
  return eid
end

-- Apply `changes` to the job (false removes a field), bump its rev, and publish it.
local function save_only(key, h, changes, channel)
  changes.rev = (tonumber(h.rev) or 0) + 1
  local set, del = {}, {}
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
  emit(channel, 'job', '{"job":' .. job_json(h) .. '}', h.queue)
end

-- save_only, then the job's hash (flat), for the caller to return.
local function save(key, h, changes, channel)
  save_only(key, h, changes, channel)
  local flat = {}
  for f, v in pairs(h) do flat[#flat + 1] = f; flat[#flat + 1] = v end
  return flat
end

-- The fencing check: still active, and still the attempt this worker claimed.
local function holds_lease(h, worker_id, token)
  return h ~= nil and h.status == 'active' and h.workerId == worker_id and h.token == token
end
