-- purchase.lua: decide one purchase with a purchase token, atomically.
-- KEYS as token.lua. ARGV[1] shopper, ARGV[2] token id, ARGV[3] the new order's id, ARGV[4] now in unix milliseconds.
-- Returns {"accepted", orderId}, {"refuse", reason[, orderId]} or {"missing"}.
local s = redis.call('HMGET', KEYS[1], 'stock', 'opens', 'closes', 'redeemed')
if not s[1] then return {'missing'} end
local now = tonumber(ARGV[4])
local closes = tonumber(s[3])
local function shut()
  if closes > 0 and now >= closes then return 'closed' end
  if now < tonumber(s[2]) then return 'not_open' end
  return nil
end

-- The token first, so that a retried purchase learns its order even after
-- the sale sold out or closed.
local t = redis.call('HGET', KEYS[3], ARGV[2])
if not t then return {'refuse', shut() or 'token_expired'} end -- signed by us, so: expired and reclaimed
local shopper, exp, order = string.match(t, '^(%S+) (%d+) ?(%S*)$')
if shopper ~= ARGV[1] then return {'refuse', 'token_not_yours'} end
if order ~= '' then return {'refuse', 'token_used', order} end
local reason = shut()
if reason then return {'refuse', reason} end
if now >= tonumber(exp) then return {'refuse', 'token_expired'} end
if tonumber(s[1]) - tonumber(s[4]) <= 0 then return {'refuse', 'sold_out'} end

redis.call('HSET', KEYS[3], ARGV[2], t .. ' ' .. ARGV[3])
redis.call('ZREM', KEYS[4], ARGV[2])
local h = redis.call('HGET', KEYS[2], ARGV[1])
local bought = h and tonumber(string.match(h, '^(%d+)')) or 0
redis.call('HSET', KEYS[2], ARGV[1], tostring(bought + 1))
redis.call('HINCRBY', KEYS[1], 'redeemed', 1)
return {'accepted', ARGV[3]}
