--[[
drover_submit: create a workflow and queue its first task, or return the one that already exists.
KEYS[1]  the workflow record (P.."wf:"..id); routes the call to the shard
ARGV     P, record (json: id, kind, input, priority, labels, task, due), idempotency key ("" for none),
         idempotency ttl ms, now
Returns  {"created", id} or {"existing", id}
Invariant: a submission is acknowledged only once its record and its first runnable task are both
written; one idempotency key never yields two workflows.
]]
redis.register_function('drover_submit', function(keys, args)
  local P, rec, idem, ttl, now = args[1], cjson.decode(args[2]), args[3], tonumber(args[4]), tonumber(args[5])
  if idem ~= '' then
    local existing = redis.call('GET', P .. 'idem:' .. idem)
    if existing then
      return {'existing', existing}
    end
  end
  if redis.call('EXISTS', keys[1]) == 1 then
    return {'existing', rec.id}
  end
  create(P, rec, now)
  if idem ~= '' then
    redis.call('SET', P .. 'idem:' .. idem, rec.id, 'PX', ttl)
  end
  return {'created', rec.id}
end)
