-- KEYS[1] a scratch key, KEYS[2..] the indexes to combine (all of one queue), the last of them a
-- type index to intersect with when ARGV[2] is '1'
-- ARGV[1] how many ids (newest first), ARGV[2] '1' to intersect with the last key
-- One queue's part of a listing: {total, {id, score, id, score, ...}}. One index is read as it
-- is; several are combined in the scratch key, removed before the call returns.
local scratch, n, typed = KEYS[1], tonumber(ARGV[1]), ARGV[2] == '1'
local last = typed and #KEYS - 1 or #KEYS
local source = KEYS[2]
if last > 2 or typed then
  source = scratch
  redis.call('ZUNIONSTORE', scratch, last - 1, unpack(KEYS, 2, last))
  if typed then redis.call('ZINTERSTORE', scratch, 2, scratch, KEYS[#KEYS], 'AGGREGATE', 'MAX') end
end
local total = redis.call('ZCARD', source)
local page = {}
if n > 0 then page = redis.call('ZREVRANGE', source, 0, n - 1, 'WITHSCORES') end
if source == scratch then redis.call('DEL', scratch) end
return {total, page}
