-- KEYS[1..B] queue block, KEYS[B+1] this worker's processing list
-- ARGV[1] worker id, ARGV[2] job key prefix, ARGV[3] job channel prefix, ARGV[4] how many jobs to
-- claim in all, ARGV[5..] ids already moved into the processing list (by BLMOVE)
-- Marks the moved ids active, then moves and claims waiting ones: one round trip fills every free
-- slot, as far as the queue's limits allow. Returns {the claimed jobs' hashes (flat), ms the limits
-- hold the queue back (0: they do not)}.
--@include queue_block
local processing = KEYS[BLOCK + 1]
local worker_id, n = ARGV[1], tonumber(ARGV[4])
local claimed, hold = claim({unpack(ARGV, 5)}, n, processing, worker_id, ARGV[2], ARGV[3])
return {claimed, hold}
