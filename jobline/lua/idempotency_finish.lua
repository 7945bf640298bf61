-- KEYS[1] an Idempotency-Key's record
-- ARGV[1] the claim's token, ARGV[2] the response record (JSON) or '' to drop the claim,
-- ARGV[3] how long to keep the record (ms)
-- Stores or drops only while the claim is ours (a claim that ran out may be another request's
-- now). Returns 1, or 0 if the key is someone else's.
local current = redis.call('GET', KEYS[1])
if current and cjson.decode(current).token ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
