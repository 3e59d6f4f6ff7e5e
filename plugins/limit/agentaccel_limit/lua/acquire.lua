-- Take a lease (and a place in the rate window) for one call, atomically, on Redis' own clock.
-- KEYS: leases (zset member -> expiry ms), starts (zset member -> start ms), pause (string with a TTL)
-- ARGV: member, capacity (-1: no concurrency limit), lease ms, rate (-1: no rate limit), interval ms
-- Returns {1, 0} when granted, else {0, ms until time alone could change the answer}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local paused = redis.call('PTTL', KEYS[3])
if paused > 0 then
  return {0, paused}
end
local capacity = tonumber(ARGV[2])
local lease = tonumber(ARGV[3])
if capacity >= 0 then
  -- a holder that died stops renewing: its lease expires and is dropped here
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  if redis.call('ZCARD', KEYS[1]) >= capacity then
    local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return {0, math.max(1, tonumber(first[2]) - now)}
  end
end
local rate = tonumber(ARGV[4])
if rate >= 0 then
  local interval = tonumber(ARGV[5])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - interval)
  local count = redis.call('ZCARD', KEYS[2])
  if count >= rate then
    local oldest = redis.call('ZRANGE', KEYS[2], count - rate, count - rate, 'WITHSCORES')
    return {0, math.max(1, tonumber(oldest[2]) + interval - now)}
  end
  redis.call('ZADD', KEYS[2], now, ARGV[1])
  redis.call('PEXPIRE', KEYS[2], interval + 1000)
end
if capacity >= 0 then
  redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], lease * 2)
end
return {1, 0}
