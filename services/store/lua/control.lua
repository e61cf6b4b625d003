--[[
Operator controls. Each returns {"ok", ...} or {"notfound"} or {"terminal", state} / {"state", state}.
Invariant: a control never runs step logic; it only moves the workflow's one task between the
structures named by `loc`, so the engine core (in the worker) decides what a cancellation means.

drover_cancel   KEYS[1] record; ARGV P, id, now
  Marks the workflow for cancellation and makes its task runnable now, wherever it waited.
drover_pause    KEYS[1] record; ARGV P, id, now
  No new step of the workflow starts until it is resumed; a running step finishes.
drover_resume   KEYS[1] record; ARGV P, id, now
drover_signal   KEYS[1] record; ARGV P, id, name, payload, now, max queued per name, max queued in all
  Delivers to a step waiting on `name`, or queues the payload for the next wait on it: each payload
  reaches exactly one wait. Returns {"full", "name"|"workflow", limit} and writes nothing when
  queueing would pass a bound.
drover_retry    KEYS[1] record; ARGV P, id, now, task (json), step, permits (json, "" for none)
  Resumes a failed workflow from `step` with a fresh attempt budget.
]]
local function control_preamble(wk, id)
  if not is_record(wk, id) then
    return {'notfound'}
  end
  local state = redis.call('HGET', wk, 'state')
  if state == 'succeeded' or state == 'failed' or state == 'cancelled' then
    return {'terminal', state}
  end
  return nil
end

register('drover_cancel', function(keys, args)
  local P, id, now = args[1], args[2], tonumber(args[3])
  local refused = control_preamble(keys[1], id)
  if refused then
    return refused
  end
  if not request_cancel(P, id, now) then
    return {'ok', 'already'}
  end
  return {'ok'}
end)

register('drover_pause', function(keys, args)
  local P, id, now = args[1], args[2], tonumber(args[3])
  local refused = control_preamble(keys[1], id)
  if refused then
    return refused
  end
  redis.call('HSET', keys[1], 'paused', '1', 'updated_ms', now)
  redis.call('ZADD', P .. 'idx:paused', redis.call('HGET', keys[1], 'created_ms'), id)
  return {'ok'}
end)

register('drover_resume', function(keys, args)
  local P, id, now = args[1], args[2], tonumber(args[3])
  local refused = control_preamble(keys[1], id)
  if refused then
    return refused
  end
  if redis.call('HDEL', keys[1], 'paused') == 1 then
    redis.call('HINCRBY', keys[1], 'resumes', 1)
  end
  redis.call('HSET', keys[1], 'updated_ms', now)
  redis.call('ZREM', P .. 'idx:paused', id)
  if redis.call('HGET', keys[1], 'loc') == 'paused' then
    unlocate(P, id)
    enqueue_ready(P, id, now)
  end
  return {'ok'}
end)

-- Delivers `payload` to the workflow's wait on `name`, or queues it for its next wait (bounded);
-- the caller checked the record and that the workflow has not ended.
local function deliver_signal(P, wk, id, name, payload, now, per_name, per_workflow)
  local waiting = redis.call('HGET', wk, 'loc') == 'signal:' .. name
  if not waiting then
    if redis.call('LLEN', wk .. ':sig:' .. name) >= per_name then
      return {'full', 'name', per_name}
    end
    -- Bounded: every name in the set was signalled, and each queued payload counts against the limit.
    local queued = 0
    for _, n in ipairs(redis.call('SMEMBERS', wk .. ':sigs')) do
      queued = queued + redis.call('LLEN', wk .. ':sig:' .. n)
    end
    if queued >= per_workflow then
      return {'full', 'workflow', per_workflow}
    end
  end
  redis.call('SADD', wk .. ':sigs', name)
  redis.call('HSET', wk, 'updated_ms', now)
  if waiting then
    local step = redis.call('HGET', wk, 'step')
    redis.call('HSET', wk .. ':rx', step .. ':' .. name, payload)
    enqueue_ready(P, id, now)
    return {'ok', 'delivered'}
  end
  redis.call('RPUSH', wk .. ':sig:' .. name, payload)
  return {'ok', 'queued'}
end

register('drover_signal', function(keys, args)
  local P, id, name, payload, now = args[1], args[2], args[3], args[4], tonumber(args[5])
  local per_name, per_workflow = tonumber(args[6]), tonumber(args[7])
  local refused = control_preamble(keys[1], id)
  if refused then
    return refused
  end
  return deliver_signal(P, keys[1], id, name, payload, now, per_name, per_workflow)
end)

register('drover_retry', function(keys, args)
  local P, id, now, task, step = args[1], args[2], tonumber(args[3]), args[4], args[5]
  if not is_record(keys[1], id) then
    return {'notfound'}
  end
  local state = redis.call('HGET', keys[1], 'state')
  if state ~= 'failed' then
    return {'state', state}
  end
  redis.call('HSET', keys[1], 'step', step, 'attempt', 1, 'phase', 'forward', 'task', task,
    'updated_ms', now)
  redis.call('HDEL', keys[1], 'cause', 'error', 'resume_from', 'cancel', 'finished_ms', 'result', 'permits')
  if args[6] ~= '' then
    redis.call('HSET', keys[1], 'permits', args[6])
  end
  redis.call('ZREM', P .. 'finished', id)
  set_state(P, id, 'running')
  enqueue_ready(P, id, now)
  return {'ok'}
end)
