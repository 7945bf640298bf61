-- KEYS[1] the queue's name index (findable.lua), then the indexes every match must be in: the
-- status indexes to match (any of them), the type index (if typed), then sets every match must be
-- in: the tag indexes, and a failure group's ids
-- ARGV[1] cursor: the seq to continue below, '' for the newest, ARGV[2] how many entries to scan,
-- ARGV[3] how many matches to return, ARGV[4] the casefolded piece of name to find ('' for any),
-- ARGV[5] how many status indexes, ARGV[6] '1' if a type index follows them, ARGV[7..] the
-- statuses of those indexes
-- One bounded step of a search in one queue, newest first: at most ARGV[2] entries of the
-- smallest index a match must be in (they share one score, the job's seq, so the step after may
-- scan another one from the same cursor). Returns {the cursor for the next step, or '' when
-- the queue is done; the number of matches in this step; {id, seq, ...} of the first ARGV[3]}.
local names = KEYS[1]
local cursor, budget, want, q = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local n_status, typed = tonumber(ARGV[5]), ARGV[6] == '1'
local statuses = {}
for i = 1, n_status do statuses[ARGV[7 + i - 1]] = true end
local type_key = typed and KEYS[2 + n_status] or nil
local first_tag = 2 + n_status + (typed and 1 or 0)

-- The smallest index every match is in.
local candidates = {}
if q ~= '' then candidates[#candidates + 1] = names end
if n_status == 1 then candidates[#candidates + 1] = KEYS[2] end
if type_key then candidates[#candidates + 1] = type_key end
for i = first_tag, #KEYS do candidates[#candidates + 1] = KEYS[i] end
local source, size = candidates[1], redis.call('ZCARD', candidates[1])
for i = 2, #candidates do
  local n = redis.call('ZCARD', candidates[i])
  if n < size then source, size = candidates[i], n end
end
if size == 0 then return {'', 0, {}} end

local function missing_from(key, id) return key ~= source and redis.call('ZSCORE', key, id) == false end
local job_prefix = string.match(names, '^(.*:{%x+}:)queue:') .. 'job:'

-- Whether the job passes every filter but the name (checked first: it costs no call).
local function passes(id)
  if n_status == 1 then
    if missing_from(KEYS[2], id) then return false end
  elseif n_status > 1 then
    local status = redis.call('HGET', job_prefix .. id, 'status')
    if not statuses[status] then return false end
  end
  if type_key and missing_from(type_key, id) then return false end
  for i = first_tag, #KEYS do
    if missing_from(KEYS[i], id) then return false end
  end
  return true
end

local max = cursor == '' and '+inf' or '(' .. cursor
local count, page, last = 0, {}, nil
if source == names then
  -- the entries carry the name: no read per entry, and scores (a second reply) only where needed
  local batch = redis.call('ZREVRANGEBYSCORE', names, max, '-inf', 'LIMIT', 0, budget)
  local find = string.find
  for _, entry in ipairs(batch) do
    -- most entries do not hold q at all: one find tells, and only a hit looks for the tab (q may
    -- be in the id part too)
    local at, tab = find(entry, q, 1, true), nil
    if at then
      tab = find(entry, '\t', 1, true)
      if at <= tab then at = find(entry, q, tab + 1, true) end
    end
    if at then
      local id = string.sub(entry, 1, tab - 1)
      if passes(id) then
        count = count + 1
        if #page < 2 * want then
          page[#page + 1] = id
          page[#page + 1] = redis.call('ZSCORE', names, entry)
        end
      end
    end
  end
  if #batch == budget then last = redis.call('ZSCORE', names, batch[#batch]) end
else
  local batch = redis.call('ZREVRANGEBYSCORE', source, max, '-inf', 'WITHSCORES', 'LIMIT', 0, budget)
  for i = 1, #batch, 2 do
    local id, seq = batch[i], batch[i + 1]
    local named = q == ''
    if not named then
      local entry = redis.call('ZRANGEBYSCORE', names, seq, seq)[1]
      named = entry ~= nil and string.find(entry, q, #id + 2, true) ~= nil
    end
    if named and passes(id) then
      count = count + 1
      if #page < 2 * want then page[#page + 1] = id; page[#page + 1] = seq end
    end
  end
  if #batch == 2 * budget then last = batch[#batch] end
end
return {last or '', count, page}
