-- Prepended to acquire.lua and release.lua when they are loaded: the rule's semaphore, on Redis' own clock.
-- KEYS: 1 leases (zset member -> expiry ms), 2 starts (zset member -> start ms), 3 pause (string with a TTL),
--       4 queue (zset member -> arrival us: the calls waiting, in arrival order), 5 waiting (hash member ->
--       "expiry_ms capacity channel": a waiter whose process stops renewing it is dropped, like a lease)
-- A waiter is told of its grant on its process's pub/sub `channel` (an asyncio waiter), or, when the channel is
-- empty, in the list <queue key>:<member> that its thread blocks on with BLPOP (one wake-up, no listener thread in
-- between). That list is not among KEYS: it shares the rule's {hash tag}, so it is in the same Cluster slot.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- 0 when a call may start now under `capacity` (-1: none) and the rate window; else ms until time alone could
-- change that, and whether time is all it waits for (false: it needs a release or a lease to expire).
local function blocked(capacity, rate, interval)
  if capacity >= 0 and redis.call('ZCARD', KEYS[1]) >= capacity then
    local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return math.max(1, (tonumber(first[2]) or now) - now), false
  end
  if rate >= 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - interval)
    local count = redis.call('ZCARD', KEYS[2])
    if count >= rate then
      local oldest = redis.call('ZRANGE', KEYS[2], count - rate, count - rate, 'WITHSCORES')
      return math.max(1, tonumber(oldest[2]) + interval - now), true
    end
  end
  return 0, true
end

-- `expiry` is the waiter's own (renewed with its queue place): a place granted to a waiter whose process has
-- just died comes back when that process's other leases do, within the lease time of its death.
local function grant(member, capacity, expiry, lease, rate, interval)
  if rate >= 0 then
    redis.call('ZADD', KEYS[2], now, member)
    redis.call('PEXPIRE', KEYS[2], interval + 1000)
  end
  if capacity >= 0 then
    redis.call('ZADD', KEYS[1], expiry, member)
    redis.call('PEXPIRE', KEYS[1], lease * 2)
  end
end

local function tell(member, channel, rule, flag, lease)
  if channel == '' then
    local key = KEYS[4] .. ':' .. member
    if flag == '1' or redis.call('LLEN', key) == 0 then  -- one "try again" is as good as many
      redis.call('RPUSH', key, flag)
      redis.call('PEXPIRE', key, lease * 2)
    end
  else
    redis.call('PUBLISH', channel, rule .. '\n' .. member .. '\n' .. flag)
  end
end

-- Hand free places to the longest-waiting calls, in arrival order, telling each (flag "1") that it already
-- holds its lease: no second round trip, no herd of retries. When the head waits for time alone (a rate window,
-- a pause), flag "0" wakes it to sleep until then. `me`, the caller, learns its answer from the script's reply.
local function dispatch(lease, rate, interval, rule, me)
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)  -- holders that died stopped renewing their leases
  local paused = redis.call('PTTL', KEYS[3])
  while true do
    local head = redis.call('ZRANGE', KEYS[4], 0, 0)[1]
    if not head then
      return
    end
    local info = redis.call('HGET', KEYS[5], head)
    local expiry, capacity, channel
    if info then
      expiry, capacity, channel = string.match(info, '^(%d+) (%-?%d+) (.*)$')
    end
    expiry, capacity = tonumber(expiry), tonumber(capacity)
    if not expiry or expiry <= now then
      redis.call('ZREM', KEYS[4], head)  -- a waiter whose process died or stalled
      redis.call('HDEL', KEYS[5], head)
    else
      local wait, timed = blocked(capacity, rate, interval)
      if paused > 0 then
        wait, timed = paused, true
      end
      if wait > 0 then
        if timed and head ~= me then
          tell(head, channel, rule, '0', lease)
        end
        return
      end
      redis.call('ZREM', KEYS[4], head)
      redis.call('HDEL', KEYS[5], head)
      grant(head, capacity, expiry, lease, rate, interval)
      if head ~= me then
        tell(head, channel, rule, '1', lease)
      end
    end
  end
end
