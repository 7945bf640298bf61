-- KEYS[1..B] queue block, then per job: KEYS[B-1+2i] job hash, KEYS[B+2i] the processing list
-- of the worker it names
-- ARGV[1] min age ms, ARGV[2] recoveries allowed,
-- then per job: ARGV[3i] id, ARGV[3i+1] job channel, ARGV[3i+2] the worker it names
-- The reaper's consistency check: an active job whose worker is gone (the caller found it no longer
-- registered; the registry lives in another slot) has lost its worker, whatever its processing list
-- says; put it back as stalled. Only jobs claimed more than ARGV[1] ms ago, and still held by the
-- worker named: a lease token fences whatever a worker wrongly given up on does next.
-- Returns how many jobs changed state.
--@include queue_block
local min_age, max_recoveries = tonumber(ARGV[1]), tonumber(ARGV[2])
local now = now_ms()
local changed = 0
for i = 1, (#KEYS - BLOCK) / 2 do
  local key, processing = KEYS[BLOCK - 1 + 2 * i], KEYS[BLOCK + 2 * i]
  local id, channel, worker_id = ARGV[3 * i], ARGV[3 * i + 1], ARGV[3 * i + 2]
  local h = load_job(key)
  if h and h.status == 'active' and h.workerId == worker_id
      and now - (tonumber(h.startedAt) or 0) > min_age then
    redis.call('LREM', processing, 1, id)
    put_back(id, key, h, channel, true, max_recoveries)
    changed = changed + 1
  end
end
return changed
