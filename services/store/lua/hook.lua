--[[
Ticketing webhooks: what the API decided about one delivery, applied atomically with its
bookkeeping, so a 2xx goes out only once all of it is written.

Keys:
  hook:dlv:<source>:<delivery>    string with a TTL (24 h): the delivery was handled; its outcome
  hook:ticket:<source>:<key>      hash: version status wf rule updated_ms (the newest event applied
                                  for the ticket, and the workflow the ticket started)

drover_hook  KEYS[1] the ticket's hash; ARGV P, source, delivery, ttl ms, version, expected version
             ("" when the ticket had none), status, now, action ("start"|"signal"|"ignore"), record
             (json, start), ticket (json, start: kept on the workflow record as `ticket`), signal
             name, payload, reason (ignore), rule, comments ("1": report the start to the outbox),
             signal limits per name and per workflow
  Returns {"duplicate", outcome} for a delivery already handled, {"stale", version} for an event
  older than (or as old as) the newest applied for its ticket, {"retry"} when another event of the
  ticket was applied since the caller read it (nothing written; decide again), else
  {"started", id}, {"existing", id}, {"signalled", id, how}, {"ignored", reason}.
Invariant: each delivery id and each ticket version is acted on at most once; an event never
undoes a newer one of its ticket.
]]
register('drover_hook', function(keys, args)
  local P, source, delivery, ttl, version, expected = args[1], args[2], args[3], tonumber(args[4]),
    tonumber(args[5]), args[6]
  local status, now, action, record, ticket = args[7], tonumber(args[8]), args[9], args[10], args[11]
  local signal, payload, reason, rule, comments = args[12], args[13], args[14], args[15], args[16]
  local per_name, per_workflow = tonumber(args[17]), tonumber(args[18])
  local tk = keys[1]
  local dk = P .. 'hook:dlv:' .. source .. ':' .. delivery
  local seen = redis.call('GET', dk)
  if seen then
    return {'duplicate', seen}
  end
  local memo = redis.call('HMGET', tk, 'version', 'wf')
  if memo[1] and version <= tonumber(memo[1]) then
    redis.call('SET', dk, 'stale', 'PX', ttl)
    return {'stale', memo[1]}
  end
  if (memo[1] or '') ~= expected then
    return {'retry'}
  end
  local result
  if action == 'start' then
    local rec = cjson.decode(record)
    local wk = wfkey(P, rec.id)
    if redis.call('EXISTS', wk) == 1 then
      result = {'existing', rec.id}
    else
      create(P, rec, now)
      redis.call('HSET', wk, 'ticket', ticket)
      if comments == '1' then
        outbox_push(P, {event = 'started', wf = rec.id, ticket = cjson.decode(ticket)}, now)
      end
      result = {'started', rec.id}
    end
    redis.call('HSET', tk, 'wf', rec.id, 'rule', rule)
  elseif action == 'signal' then
    local id = memo[2]
    local wk = id and wfkey(P, id)
    local state = wk and is_record(wk, id) and redis.call('HGET', wk, 'state')
    if not state or state == 'succeeded' or state == 'failed' or state == 'cancelled' then
      result = {'ignored', 'the workflow this ticket started has ended'}
    else
      local r = deliver_signal(P, wk, id, signal, payload, now, per_name, per_workflow)
      if r[1] == 'ok' then
        result = {'signalled', id, r[2]}
      else
        result = {'ignored', 'the workflow holds too many queued signals'}
      end
    end
  else
    result = {'ignored', reason}
  end
  redis.call('HSET', tk, 'version', version, 'status', status, 'updated_ms', now)
  redis.call('SET', dk, result[1] .. ' ' .. (result[2] or ''), 'PX', ttl)
  return result
end)

--[[
drover_outbox_take  KEYS[1] P.."outbox"; ARGV P, seq, record (json of the ticket-update workflow,
                    "" when the event needs no write-back), now
  Pops the outbox's first entry if it is `seq` and creates its workflow in the same call (a
  workflow that exists already is not created again). Returns 1, or 0 when another dispatcher took
  it first.
]]
register('drover_outbox_take', function(keys, args)
  local P, seq, record = args[1], tonumber(args[2]), args[3]
  local head = redis.call('LINDEX', keys[1], 0)
  if not head or cjson.decode(head).seq ~= seq then
    return 0
  end
  redis.call('LPOP', keys[1])
  if record ~= '' then
    local rec = cjson.decode(record)
    if redis.call('EXISTS', wfkey(P, rec.id)) == 0 then
      create(P, rec, tonumber(args[4]))
    end
  end
  return 1
end)
