-- Extend the leases of calls still running and the queue places of calls still waiting. A lease that expired is
-- renewed only while it is still in the set: once a script dropped it, another call may hold its place.
-- KEYS: leases, waiting; ARGV: lease ms, members...  Returns the members found neither holding nor waiting.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[1])
local missing = {}
for i = 2, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], now + lease, ARGV[i])
  else
    local info = redis.call('HGET', KEYS[2], ARGV[i])
    local space = info and string.find(info, ' ')
    if space then
      redis.call('HSET', KEYS[2], ARGV[i], (now + lease) .. string.sub(info, space))
    else
      table.insert(missing, ARGV[i])
    end
  end
end
redis.call('PEXPIRE', KEYS[1], lease * 2)
redis.call('PEXPIRE', KEYS[2], lease * 2)
return missing
