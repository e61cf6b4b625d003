--[[
drover_submit: create a workflow and queue its first task, or return the one that already exists.
KEYS[1]  the workflow record (P.."wf:"..id); routes the call to the shard
ARGV     P, record (json: id, kind, input, priority, labels, task, due), idempotency key ("" for none),
         idempotency ttl ms, now, fingerprint of the request (kind, input, priority, labels)
Returns  {"created", id}, {"existing", id}, or {"conflict", id} when the key named a workflow
         submitted with a different request (nothing is written)
Invariant: a submission is acknowledged only once its record and its first runnable task are both
written; one idempotency key never yields two workflows.
]]
register('drover_submit', function(keys, args)
  local P, rec, idem, ttl, now = args[1], cjson.decode(args[2]), args[3], tonumber(args[4]), tonumber(args[5])
  local fingerprint = args[6] or ''
  if idem ~= '' then
    local existing = redis.call('GET', P .. 'idem:' .. idem)
    if existing then
      -- "<id> <fingerprint>"; a bare id was written before fingerprints were kept.
      local id, seen = string.match(existing, '^(%S+) (%S+)$')
      if not id then
        return {'existing', existing}
      end
      if seen ~= fingerprint then
        return {'conflict', id}
      end
      return {'existing', id}
    end
  end
  if redis.call('EXISTS', keys[1]) == 1 then
    if not is_record(keys[1], rec.id) then
      return redis.error_reply('ERR ' .. keys[1] .. ' is not a workflow record')
    end
    return {'existing', rec.id}
  end
  create(P, rec, now)
  if idem ~= '' then
    local value = rec.id
    if fingerprint ~= '' then
      value = rec.id .. ' ' .. fingerprint
    end
    redis.call('SET', P .. 'idem:' .. idem, value, 'PX', ttl)
  end
  return {'created', rec.id}
end)
