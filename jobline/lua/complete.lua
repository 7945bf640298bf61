-- KEYS[1..B] queue block, KEYS[B+1] processing list, KEYS[B+2] job hash
-- ARGV[1] id, ARGV[2] job channel, ARGV[3] worker id, ARGV[4] lease token, ARGV[5] result JSON,
-- ARGV[6] how many waiting jobs to claim for the freed slot (0 or 1), ARGV[7] job key prefix,
-- ARGV[8] job channel prefix
-- Returns {1, or 0 when the lease was lost (the newer owner's outcome stands); the jobs claimed}.
-- Claiming in the ack saves the worker a round trip per job.
--@include queue_block
local processing, key = KEYS[BLOCK + 1], KEYS[BLOCK + 2]
local id, channel, worker_id = ARGV[1], ARGV[2], ARGV[3]
redis.call('LREM', processing, 1, id)
local claim_next = function() return (claim({}, tonumber(ARGV[6]), processing, worker_id, ARGV[7], ARGV[8])) end
local h = load_job(key)
if not holds_lease(h, worker_id, ARGV[4]) then return {0, claim_next()} end
local now = now_ms()
index_status(id, h.seq, 'active', 'completed')
save(key, h, {status = 'completed', finishedAt = now, progress = 100, result = ARGV[5], action = false}, channel)
count_finished(h, 'completed', now)
release_unique(h, now, false)
notify_parent(h, 'completed')
retain_count('completed')
return {1, claim_next()}
