-- Now in epoch ms by the Redis clock, the one every host shares (liveness.redis_now_ms in Python).
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
