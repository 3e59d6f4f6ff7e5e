-- Extend the leases of calls still running. A lease that expired is renewed only while it is still in the set:
-- once an acquire dropped it, another call may hold its place.
-- KEYS: leases; ARGV: lease ms, members...  Returns the members that were not found (released or expired).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[1])
local missing = {}
for i = 2, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], now + lease, ARGV[i])
  else
    table.insert(missing, ARGV[i])
  end
end
redis.call('PEXPIRE', KEYS[1], lease * 2)
return missing
