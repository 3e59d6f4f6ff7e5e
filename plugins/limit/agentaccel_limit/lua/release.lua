-- Give a lease back, or leave the queue (a call that timed out or was cancelled; if a release granted it a lease
-- meanwhile, that lease goes back too), and hand the free place to the longest-waiting call.
-- ARGV: member, lease ms, rate (-1: none), interval ms, rule
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('HDEL', KEYS[5], ARGV[1])
redis.call('DEL', KEYS[4] .. ':' .. ARGV[1])
dispatch(tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5], nil)
return 1
