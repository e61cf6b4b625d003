--[[
drover_handback: give back the task of an attempt cut off by its worker's shutdown, so that any worker
resumes it at once instead of waiting for the lease to expire.
KEYS[1]  the workflow record
ARGV     P, id, fencing token, now, history max
Returns  {"ok"} when handed back, {"stale"} when the token no longer holds the lease (the attempt
         committed, or its lease expired and moved on: nothing changed), or {"gone"}
Invariants: only the holder of the current token hands back, so a late commit or renewal of the
handed-back attempt is refused as stale; a hand-back is not a failure: it frees the lease and the
step's permits and queues the task ready now without counting an attempt (the history records it as
'handed-back'); a paused workflow's task is parked by the next claim, as any paused task is.
]]
register('drover_handback', function(keys, args)
  local P, id, token, now, hist_max = args[1], args[2], args[3], tonumber(args[4]), tonumber(args[5])
  local wk = keys[1]
  if not is_record(wk, id) then
    return {'gone'}
  end
  local f = redis.call('HMGET', wk, 'lease_token', 'lease_worker', 'lease_start', 'step', 'attempt', 'phase')
  if f[1] ~= token then
    return {'stale'}
  end
  redis.call('ZREM', P .. 'leases', id)
  release_step_permits(P, id)
  push_history(wk .. ':hist', cjson.encode({
    step = tonumber(f[4]), attempt = tonumber(f[5]), phase = f[6], worker = f[2],
    token = tonumber(f[1]), start_ms = tonumber(f[3]), end_ms = now, outcome = 'handed-back',
  }), hist_max)
  redis.call('HDEL', wk, 'lease_token', 'lease_worker', 'lease_start', 'lease_until')
  redis.call('HSET', wk, 'updated_ms', now)
  enqueue_ready(P, id, now)
  return {'ok'}
end)
