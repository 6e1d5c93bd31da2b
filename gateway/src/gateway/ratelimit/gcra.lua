-- GCRA (generic cell rate algorithm) for one key, decided atomically inside Redis.
--
-- KEYS[1]  the bucket's key; its value is the theoretical arrival time (TAT)
-- ARGV[1]  emission interval T in microseconds (window / quota, rounded up)
-- ARGV[2]  burst tolerance B in microseconds (quota * T: a full bucket admits quota at once)
-- ARGV[3]  cost: how many requests this call counts for (1 <= cost <= quota)
--
-- Rule: a request at time t is admitted iff max(TAT, t) + cost*T - B <= t; an admission
-- stores TAT' = max(TAT, t) + cost*T. With quota q per window w (T = w/q, B = q*T) a full
-- bucket admits q requests at once and then one every T.
--
-- Returns {allowed (0/1), remaining, reset_after_us, retry_after_us}: remaining is how many
-- more unit requests would be admitted right now, reset_after how long until the bucket is
-- full again, retry_after how long until this request would be admitted (0 if it was).
--
-- Times are integer microseconds from Redis's own clock, so every gateway instance shares
-- one clock and no float drift accumulates. Lua numbers are doubles: integers stay exact up
-- to 2^53 us (year 2255). Scripts are replicated by effects (Redis >= 5 by default, always
-- from 7), which is what makes calling TIME before a write allowed.

local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])

-- GET answers false for a missing key: a fresh (or expired) bucket is full.
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then
  tat = now
end

local new_tat = tat + interval * cost
local allow_at = new_tat - burst

if allow_at <= now then
  local reset_after = new_tat - now
  -- '%d' keeps all digits; tostring() would print a 16-digit number in exponent form.
  -- The key lives exactly as long as its TAT matters: an expired key is a full bucket.
  redis.call('SET', KEYS[1], string.format('%d', new_tat),
             'PX', math.ceil(reset_after / 1000))
  return {1, math.floor((burst - reset_after) / interval), reset_after, 0}
end

return {0, math.floor((burst - (tat - now)) / interval), tat - now, allow_at - now}
