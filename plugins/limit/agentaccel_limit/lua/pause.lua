-- Stop every process admitting calls of a rule for ARGV[1] ms (a provider's Retry-After); never shortens a pause.
-- KEYS: pause
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return 1
