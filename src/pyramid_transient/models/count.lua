-- Count the live objects. No own ARGV. Returns an integer.
return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
