-- KEYS[1..B] queue block, KEYS[B+1..] job hashes of the earliest delayed ids
-- per job: ARGV[2i-1] id, ARGV[2i] job channel
-- Moves the due ones to waiting. Returns {promoted, ms until the next candidate is due or -1}.
--@include queue_block
local now = now_ms()
local promoted, wait_ms = 0, -1
for i = 1, #KEYS - BLOCK do
  local key, id, channel = KEYS[BLOCK + i], ARGV[2 * i - 1], ARGV[2 * i]
  local due = redis.call('ZSCORE', DELAYED, id)
  if due then
    due = tonumber(due)
    if due <= now then
      redis.call('ZREM', DELAYED, id)
      local h = load_job(key)
      if h and h.status == 'delayed' then
        index_status(id, h.seq, 'delayed', 'waiting')
        push_waiting(id, h.priority, false)
        save(key, h, {status = 'waiting', runAt = false}, channel)
        promoted = promoted + 1
      end
    elseif wait_ms < 0 or due - now < wait_ms then
      wait_ms = due - now
    end
  end
end
return {promoted, wait_ms}
