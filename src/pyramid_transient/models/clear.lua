-- Delete every key of the class (KEYS[1 .. 3+n]); in the key layout the caller deleted the
-- objects' keys first. No own ARGV. Returns the number of live objects there were.
prepare()  -- the keys' types checked (prelude.lua)
local n = redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
redis.call('DEL', unpack(KEYS))
return answer(n)
