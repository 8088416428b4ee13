-- token.lua: decide one token request, atomically.
-- KEYS[1] the sale (hash), KEYS[2] its holders (hash: shopper -> "bought[ tokenId issuedMs expiresMs]"),
-- KEYS[3] its tokens (hash: tokenId -> "shopper expiresMs[ orderId]"), KEYS[4] outstanding tokens by expiry (zset).
-- ARGV[1] shopper, ARGV[2] the new token's id, ARGV[3] now in unix milliseconds.
-- Returns {"issued"|"already", tokenId, issuedMs, expiresMs}, {"deny", reason} or {"missing"}.
local s = redis.call('HMGET', KEYS[1], 'stock', 'quota', 'perUser', 'ttl', 'opens', 'closes', 'issued', 'expired', 'redeemed')
if not s[1] then return {'missing'} end
local now = tonumber(ARGV[3])
local closes = tonumber(s[6])
if closes > 0 and now >= closes then return {'deny', 'closed'} end
if now < tonumber(s[5]) then return {'deny', 'not_open'} end
local expired = tonumber(s[8])

-- reclaim takes back an expired token: its quota returns, and a shopper
-- who holds nothing and bought nothing is forgotten.
local function reclaim(id)
  local t = redis.call('HGET', KEYS[3], id)
  redis.call('HDEL', KEYS[3], id)
  redis.call('ZREM', KEYS[4], id)
  if t then
    local shopper = string.match(t, '^(%S+)')
    local h = redis.call('HGET', KEYS[2], shopper)
    local bought = h and string.match(h, '^(%d+)') or '0'
    if bought == '0' then redis.call('HDEL', KEYS[2], shopper) else redis.call('HSET', KEYS[2], shopper, bought) end
  end
  redis.call('HINCRBY', KEYS[1], 'expired', 1)
  expired = expired + 1
end

-- The tokens expired by now, at most 16 a request (flashgate's writer
-- reclaims them at each batch).
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, 16)) do reclaim(id) end

local bought = 0
local h = redis.call('HGET', KEYS[2], ARGV[1])
if h then
  local b, id, iss, exp = string.match(h, '^(%d+) ?(%S*) ?(%d*) ?(%d*)$')
  bought = tonumber(b)
  if id ~= '' then
    if now < tonumber(exp) then return {'already', id, iss, exp} end
    reclaim(id) -- expired, not reclaimed yet
  end
end
if bought >= tonumber(s[3]) then return {'deny', 'limit_reached'} end
if tonumber(s[1]) - tonumber(s[9]) <= 0 then return {'deny', 'sold_out'} end
if tonumber(s[2]) - tonumber(s[7]) + expired <= 0 then return {'deny', 'quota_exhausted'} end

-- Issue: the expiry is rounded up to the whole second, as JWT times are.
local exp = string.format('%.0f', math.ceil((now + tonumber(s[4])) / 1000) * 1000)
redis.call('HSET', KEYS[2], ARGV[1], bought .. ' ' .. ARGV[2] .. ' ' .. ARGV[3] .. ' ' .. exp)
redis.call('HSET', KEYS[3], ARGV[2], ARGV[1] .. ' ' .. exp)
redis.call('ZADD', KEYS[4], exp, ARGV[2])
redis.call('HINCRBY', KEYS[1], 'issued', 1)
return {'issued', ARGV[2], ARGV[3], exp}
