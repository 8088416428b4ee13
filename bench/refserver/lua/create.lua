-- create.lua: create a sale unless it exists.
-- KEYS[1] the sale (hash). ARGV: field, value, field, value, ...
-- Returns 1 when created, 0 when the sale exists.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
