-- Deletes the tokens whose invalidation failed earlier (the retry backlog), then reads
-- (creating when missing) the tokens a cache key needs, atomically and in one round trip.
-- Deleting first lets a read that carries retried invalidations never see the old tokens.
-- Used to read two tokens or more, or any number with retried invalidations: a single
-- token without them is one SET NX GET EX instead (TokenStore._read_tokens, _tokens.py),
-- and a commit's invalidation one DEL (delete, _backlog.py).
--
-- Why a script rather than a pipeline of SET NX GET EX, one per token (the same one round
-- trip, the same semantics): redis-py packs and parses every command of a pipeline in
-- Python, several microseconds each, while the script answers with one short digest.
-- Measured (benchmarks/bench_cache.py), the pipeline runs at 0.9x the script's speed for
-- 2 tokens, 0.5x for 10 and 0.2x for 100; only for one token does a plain command win.
--
-- KEYS[1..ARGV[1]]          token keys to invalidate (deleted)
-- KEYS[ARGV[1]+1..#KEYS]    token keys to read; a missing one is created with SET NX EX
-- ARGV[1]                   how many of KEYS to invalidate
-- ARGV[2]                   token time to live, in seconds
-- ARGV[3]                   random base of new tokens: KEYS[i] gets ARGV[3] .. i
-- ARGV[4]                   optional: "digest" to return the SHA1 (hex) of the tokens
--                           read, joined with ",", instead of the tokens (a cache key
--                           needs no more, and one short reply is cheaper to parse than N)
--
-- Returns the tokens of the keys read, in order, or their digest. A server without
-- redis.sha1hex (fakeredis, behind memory:// URLs) returns the tokens even when asked for
-- the digest; TokenStore hashes them the same way. Every key shares the {tokens} hash tag.
local n = tonumber(ARGV[1])
for i = 1, n, 1000 do
  redis.call('DEL', unpack(KEYS, i, math.min(i + 999, n)))
end
local tokens = {}
for i = n + 1, #KEYS do
  local token = redis.call('GET', KEYS[i])
  if not token then
    token = ARGV[3] .. i
    redis.call('SET', KEYS[i], token, 'NX', 'EX', ARGV[2])
  end
  tokens[#tokens + 1] = token
end
if ARGV[4] == 'digest' and redis.sha1hex then
  return redis.sha1hex(table.concat(tokens, ','))
end
return tokens
