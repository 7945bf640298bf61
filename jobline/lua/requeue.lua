-- KEYS[1..B] queue block, KEYS[B+1] a worker's processing list, KEYS[B+2..] job hashes
-- ARGV[1] that worker's id, ARGV[2] 'stalled' (worker died), 'shutdown' (graceful stop) or
-- 'unclaimed' (only undo moves not yet marked active), ARGV[3] recoveries allowed,
-- then per job: ARGV[2i+2] id, ARGV[2i+3] job channel
-- Puts the worker's jobs back at the front of their priority's line, in their original order
-- (hence the walk from the last claimed to the first). A job recovered from dead workers more
-- than ARGV[3] times fails as stalled. Returns how many jobs changed state.
--@include queue_block
local processing = KEYS[BLOCK + 1]
local worker_id, mode, max_recoveries = ARGV[1], ARGV[2], tonumber(ARGV[3])
local changed = 0
for i = #KEYS - BLOCK - 1, 1, -1 do
  local key, id, channel = KEYS[BLOCK + 1 + i], ARGV[2 * i + 2], ARGV[2 * i + 3]
  local h = load_job(key)
  local status = h and h.status
  local mine = status == 'active' and h.workerId == worker_id
  if status == 'waiting' or not status or (mode ~= 'unclaimed' and not mine) then
    -- moved but never marked active: undo the move; gone or not ours any more: just forget it
    if redis.call('LREM', processing, 1, id) == 1 and status == 'waiting' then
      push_waiting(id, h.priority, true)
    end
  elseif mine and mode ~= 'unclaimed' and redis.call('LREM', processing, 1, id) == 1 then
    put_back(id, key, h, channel, mode == 'stalled', max_recoveries)
    changed = changed + 1
  end
end
return changed
