--[[
drover_trim: delete finished workflows older than the retention, a bounded batch per call.
KEYS[1]  P.."finished"
ARGV     P, cutoff (ms: workflows finished before it go), batch
Returns  the number of workflows deleted
Invariant: only terminal workflows are deleted, with every key and index entry that names them.
]]
register('drover_trim', function(keys, args)
  local P, cutoff, batch = args[1], tonumber(args[2]), tonumber(args[3])
  local ids = redis.call('ZRANGEBYSCORE', keys[1], '-inf', cutoff, 'LIMIT', 0, batch)
  for _, id in ipairs(ids) do
    local wk = wfkey(P, id)
    local f = redis.call('HMGET', wk, 'state', 'kind', 'labels', 'cluster')
    if f[1] then
      redis.call('ZREM', P .. 'idx:state:' .. f[1], id)
    end
    if f[2] then
      redis.call('ZREM', P .. 'idx:kind:' .. f[2], id)
    end
    if f[3] then
      for k, v in pairs(cjson.decode(f[3])) do
        redis.call('ZREM', P .. 'idx:label:' .. k .. '=' .. tostring(v), id)
      end
    end
    if f[4] then
      redis.call('ZREM', P .. 'idx:cluster:' .. f[4], id)
    end
    for _, name in ipairs(redis.call('SMEMBERS', wk .. ':sigs')) do
      redis.call('DEL', wk .. ':sig:' .. name)
    end
    redis.call('DEL', wk, wk .. ':out', wk .. ':hist', wk .. ':rx', wk .. ':held', wk .. ':kids',
      wk .. ':sigs')
    redis.call('ZREM', P .. 'idx:all', id)
    redis.call('ZREM', P .. 'idx:top', id)
    redis.call('ZREM', P .. 'idx:paused', id)
    redis.call('ZREM', keys[1], id)
  end
  return #ids
end)
