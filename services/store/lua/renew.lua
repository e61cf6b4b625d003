--[[
drover_renew: extend a running attempt's lease.
KEYS[1]  the workflow record
ARGV     P, id, fencing token, now, lease ms, progress? (JSON a running step reported)
Returns  {1, cancel requested (0|1)} while the token holds the lease, {0} once it does not
Invariant: only the holder of the current token extends the lease or writes progress; a lost
lease is never revived.
]]
register('drover_renew', function(keys, args)
  local P, id, token, now, lease_ms = args[1], args[2], args[3], tonumber(args[4]), tonumber(args[5])
  -- The record check rides on the read (see drover_commit): a hash of another id is no record.
  local f = redis.call('HMGET', keys[1], 'lease_token', 'cancel', 'id')
  if f[3] ~= id or f[1] ~= token then
    return {0}
  end
  local until_s = string.format('%d', now + lease_ms)
  redis.call('ZADD', P .. 'leases', 'XX', until_s, id)
  if args[6] and args[6] ~= '' then
    redis.call('HSET', keys[1], 'lease_until', until_s, 'progress', args[6])
  else
    redis.call('HSET', keys[1], 'lease_until', until_s)
  end
  return {1, f[2] == '1' and 1 or 0}
end)
