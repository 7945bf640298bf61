-- KEYS[1..20] queue block, KEYS[21] this worker's processing list
-- ARGV[1] worker id, ARGV[2] job key prefix, ARGV[3] how many jobs to claim in all,
-- ARGV[4..] ids already moved into the processing list (by BLMOVE)
-- Marks the moved ids active, then moves and claims waiting ones: one round trip fills every free
-- slot. Returns the claimed jobs' hashes (flat).
--@include queue_block
local processing = KEYS[21]
local worker_id, job_prefix, n = ARGV[1], ARGV[2], tonumber(ARGV[3])
return claim({unpack(ARGV, 4)}, n, processing, worker_id, job_prefix)
