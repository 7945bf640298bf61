-- KEYS[1] the queue's event log, KEYS[2] job hash, KEYS[3] the job's custom events list
-- ARGV[1] job channel, ARGV[2] worker id, ARGV[3] lease token, ARGV[4] event name,
-- ARGV[5] event data (JSON), ARGV[6] how many custom events the job keeps
-- A handler's custom event (ctx.emit): kept in the job's list and sent on the streams as
-- `job-event` {"jobId", "name", "data", "at"}, with an id like every event. Fenced: returns 1, or 0
-- when this worker no longer holds the job.
--@include prelude
local key, custom = KEYS[2], KEYS[3]
local h = load_job(key)
if not holds_lease(h, ARGV[2], ARGV[3]) then return 0 end
local body = '"name":' .. cjson.encode(ARGV[4]) .. ',"data":' .. ARGV[5] .. ',"at":' .. now_ms()
redis.call('RPUSH', custom, '{' .. body .. '}')
redis.call('LTRIM', custom, -tonumber(ARGV[6]), -1)
emit(ARGV[1], 'job-event', '{"jobId":' .. cjson.encode(h.id) .. ',' .. body .. '}', h.queue)
return 1
