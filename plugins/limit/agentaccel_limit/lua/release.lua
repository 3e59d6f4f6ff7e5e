-- Give a lease back and tell the waiting processes.  KEYS: leases; ARGV: member, channel, rule name
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
