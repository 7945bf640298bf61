-- KEYS[1] the queue's failure groups (findable.lua), KEYS[2] their info hash
-- ARGV[1] how many groups at most (most jobs first), ARGV[2] how many job ids per group
-- Returns per group {fingerprint, count, type, pattern, sample, first seen, last seen, {ids}},
-- the ids newest first.
local groups, info = KEYS[1], KEYS[2]
local stem = string.sub(groups, 1, -#'failure-groups' - 1)
local out = {}
local top = redis.call('ZREVRANGE', groups, 0, tonumber(ARGV[1]) - 1, 'WITHSCORES')
for i = 1, #top, 2 do
  local fp = top[i]
  local f = redis.call('HMGET', info, fp .. ':type', fp .. ':pattern', fp .. ':sample', fp .. ':first', fp .. ':last')
  local ids = redis.call('ZREVRANGE', stem .. 'fg:' .. fp, 0, tonumber(ARGV[2]) - 1)
  out[#out + 1] = {fp, top[i + 1], f[1] or '', f[2] or '', f[3] or '', f[4] or '0', f[5] or '0', ids}
end
return out
