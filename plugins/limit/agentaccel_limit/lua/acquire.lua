-- Take a lease (and a place in the rate window) for one call, atomically, or join the rule's queue.
-- ARGV: member, capacity (-1: no concurrency limit), lease ms, rate (-1: no rate limit), interval ms,
--       channel (where to tell this call of its grant; '' for its list, see common.lua), rule
-- Returns {1, 0} when the call holds its lease, else {0, ms until time alone could change the answer, 1 when
-- time is all it waits for}; a queued call is also granted by a later release, which tells it.
local member = ARGV[1]
local capacity, lease = tonumber(ARGV[2]), tonumber(ARGV[3])
local rate, interval = tonumber(ARGV[4]), tonumber(ARGV[5])
if capacity < 0 then
  -- a rate alone: its waits are for time, never for a release, so there is nothing to queue for
  local paused = redis.call('PTTL', KEYS[3])
  if paused > 0 then
    return {0, paused, 1}
  end
  local wait = blocked(-1, rate, interval)
  if wait > 0 then
    return {0, wait, 1}
  end
  grant(member, -1, now, lease, rate, interval)
  return {1, 0}
end
if not redis.call('ZSCORE', KEYS[1], member) then
  redis.call('HSET', KEYS[5], member, (now + lease) .. ' ' .. capacity .. ' ' .. ARGV[6])
  if not redis.call('ZSCORE', KEYS[4], member) then
    redis.call('ZADD', KEYS[4], tonumber(t[1]) * 1000000 + tonumber(t[2]), member)
  end
  redis.call('PEXPIRE', KEYS[4], lease * 2)
  redis.call('PEXPIRE', KEYS[5], lease * 2)
  dispatch(lease, rate, interval, ARGV[7], member)
end
if redis.call('ZSCORE', KEYS[1], member) then
  redis.call('DEL', KEYS[4] .. ':' .. member)  -- "try again"s it no longer needs
  return {1, 0}
end
local paused = redis.call('PTTL', KEYS[3])
if paused > 0 then
  return {0, paused, 1}
end
local wait, timed = blocked(capacity, rate, interval)
if wait == 0 then
  -- free places, but for the calls ahead of this one: they are told, and this one is told when its turn comes
  wait, timed = lease, false
end
return {0, wait, timed and 1 or 0}
