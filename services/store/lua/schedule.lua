--[[
Schedules: cron schedules that start workflows. The fire times themselves are computed by the
caller (the scheduler in each worker process, over the pure `drover_workflows::schedule`); these
functions keep what must be decided atomically: which fire time is next (claimed by compare-and-set,
so one fire time starts at most one workflow however many schedulers race for it), the overlap
policy against the schedule's previous workflow, and the log of what each fire time became.

Keys (P.."sched:"..sid is the schedule's hash):
  sched:<sid>       hash: id spec overlap created_ms updated_ms paused note next_ms due_ms version
                    last_fire_ms last_wf buffered buffered_ms
  sched:<sid>:log   list, newest first, capped: one JSON entry per fire time decided, control or
                    skipped range
  sched:due         zset: sid -> when a scheduler must look at it (the next fire time plus its
                    jitter; sooner while a buffered run waits for the previous one to end)
  sched:wake        list (at most one element): a schedule changed, blocked schedulers look again
  idx:sched         zset: sid -> created_ms (listing)

drover_sched_put     KEYS[1] sched hash; ARGV P, sid, spec, overlap, next_ms|"", due_ms, mode
                     ("create"|"replace"), paused ("1"|"0"), note, now
  Returns {"created"} / {"replaced"}, or {"exists"} (create) / {"notfound"} (replace), writing nothing.
drover_sched_pause   KEYS[1]; ARGV P, sid, paused ("1"|"0"), note, next_ms|"", due_ms, now, log_max
drover_sched_delete  KEYS[1]; ARGV P, sid
drover_sched_fire    KEYS[1]; ARGV P, sid, mode ("due"|"trigger"|"backfill"), fire_ms, next_ms|"",
                     next_due, now, verdict ("start"|"skip"), reason, record (json, "" to skip),
                     overlap ("" = the schedule's), count, until_ms, due_ms, log_max, actor
  mode "due" claims fire_ms only if it is still the schedule's next fire time ({"stale"} otherwise,
  nothing written) and moves the schedule on to next_ms. "trigger" and "backfill" leave the next fire
  time alone. A start whose workflow id already exists (a backfill of a time that fired) is
  {"existing", id}. Returns {"started", id, cancelled id or ""}, {"buffered", id}, {"skipped",
  reason}, {"existing", id}, {"stale"}, {"paused"} or {"notfound"}.
drover_sched_buffer  KEYS[1]; ARGV P, sid, now, log_max
  Starts the buffered run once the previous workflow has ended; returns {"started", id},
  {"waiting"} or {"none"}.
drover_sched_take    KEYS[1] P.."sched:due"; ARGV P, now, n, lease ms
  Takes up to n schedules due at `now` for one scheduler: each is moved `lease` ms ahead in the
  index, so other schedulers do not take it meanwhile; the fire call (or a requeue) puts it back at
  its next due time, and a scheduler that dies holding it only delays it by the lease. Returns
  sid, due, sid, due, ...
drover_sched_requeue KEYS[1] the schedule's hash; ARGV P, sid, now
  Puts a taken schedule back where its state says (nothing else changes).
Invariant: a workflow started by a schedule is created by the same call that claims its fire time.
]]

local BUFFER_RECHECK_MS = 500

local function sched_log(key, entry, max)
  redis.call('LPUSH', key .. ':log', cjson.encode(entry))
  redis.call('LTRIM', key .. ':log', 0, max - 1)
end

local function sched_wake(P)
  redis.call('LPUSH', P .. 'sched:wake', '1')
  redis.call('LTRIM', P .. 'sched:wake', 0, 0)
end

-- Whether workflow `id` is still going (not ended, not trimmed away).
local function running(P, id)
  if not id or id == '' then
    return false
  end
  local state = redis.call('HGET', wfkey(P, id), 'state')
  return state ~= false and state ~= 'succeeded' and state ~= 'failed' and state ~= 'cancelled'
end

-- Put the schedule where schedulers look for it: at its next due time, or soon while a buffered
-- run waits; nowhere while paused or when it has no more fire times and nothing buffered.
local function sched_place(P, key, sid, now)
  local f = redis.call('HMGET', key, 'paused', 'next_ms', 'due_ms', 'buffered_ms')
  if f[1] == '1' then
    redis.call('ZREM', P .. 'sched:due', sid)
    return
  end
  local at = nil
  if f[2] and f[2] ~= '' then
    at = tonumber(f[3])
  end
  if f[4] and f[4] ~= '' then
    local recheck = now + BUFFER_RECHECK_MS
    if not at or recheck < at then
      at = recheck
    end
  end
  if at then
    redis.call('ZADD', P .. 'sched:due', at, sid)
  else
    redis.call('ZREM', P .. 'sched:due', sid)
  end
end

local function is_schedule(key, sid)
  return redis.call('TYPE', key).ok == 'hash' and redis.call('HGET', key, 'id') == sid
end

register('drover_sched_put', function(keys, args)
  local P, sid, spec, overlap, next_ms, due_ms, mode = args[1], args[2], args[3], args[4], args[5],
    args[6], args[7]
  local paused, note, now = args[8], args[9], tonumber(args[10])
  local key = keys[1]
  local exists = redis.call('EXISTS', key) == 1
  if exists and not is_schedule(key, sid) then
    return redis.error_reply('ERR ' .. key .. ' is not a schedule')
  end
  if mode == 'create' then
    if exists then
      return {'exists'}
    end
    redis.call('HSET', key, 'id', sid, 'created_ms', now, 'version', 0, 'paused', paused, 'note', note)
    redis.call('ZADD', P .. 'idx:sched', now, sid)
  elseif not exists then
    return {'notfound'}
  end
  redis.call('HSET', key, 'spec', spec, 'overlap', overlap, 'next_ms', next_ms, 'due_ms', due_ms,
    'updated_ms', now)
  redis.call('HINCRBY', key, 'version', 1)
  if overlap ~= 'buffer-one' then
    redis.call('HDEL', key, 'buffered', 'buffered_ms')
  end
  sched_log(key, {action = mode == 'create' and 'created' or 'replaced', at_ms = now,
    next_ms = tonumber(next_ms)}, 1000)
  sched_place(P, key, sid, now)
  sched_wake(P)
  return {mode == 'create' and 'created' or 'replaced'}
end)

register('drover_sched_pause', function(keys, args)
  local P, sid, paused, note, next_ms, due_ms, now, log_max = args[1], args[2], args[3], args[4],
    args[5], args[6], tonumber(args[7]), tonumber(args[8])
  local key = keys[1]
  if not is_schedule(key, sid) then
    return {'notfound'}
  end
  redis.call('HSET', key, 'paused', paused, 'note', note, 'updated_ms', now)
  if paused == '0' then
    -- Fire times that passed while paused are not started: the next one is after now.
    redis.call('HSET', key, 'next_ms', next_ms, 'due_ms', due_ms)
  end
  sched_log(key, {action = paused == '1' and 'paused' or 'unpaused', at_ms = now, note = note},
    log_max)
  sched_place(P, key, sid, now)
  sched_wake(P)
  return {'ok'}
end)

register('drover_sched_delete', function(keys, args)
  local P, sid = args[1], args[2]
  local key = keys[1]
  if not is_schedule(key, sid) then
    return 0
  end
  redis.call('DEL', key, key .. ':log')
  redis.call('ZREM', P .. 'sched:due', sid)
  redis.call('ZREM', P .. 'idx:sched', sid)
  return 1
end)

register('drover_sched_fire', function(keys, args)
  local P, sid, mode, fire_ms, next_ms, next_due = args[1], args[2], args[3], args[4], args[5], args[6]
  local now, verdict, reason, record, overlap = tonumber(args[7]), args[8], args[9], args[10], args[11]
  local count, until_ms, due_ms, log_max, actor = tonumber(args[12]), args[13], args[14],
    tonumber(args[15]), args[16]
  local key = keys[1]
  if not is_schedule(key, sid) then
    return {'notfound'}
  end
  local f = redis.call('HMGET', key, 'next_ms', 'paused', 'overlap', 'last_wf', 'buffered')
  if mode == 'due' then
    if f[1] ~= fire_ms then
      return {'stale'}
    end
    if f[2] == '1' then
      return {'paused'}
    end
  end
  if overlap == '' then
    overlap = f[3]
  end
  local entry = {fire_ms = tonumber(fire_ms), due_ms = tonumber(due_ms), at_ms = now, mode = mode}
  if actor ~= '' then
    entry.by = actor
  end
  local result
  if verdict == 'skip' then
    entry.action = 'skipped'
    entry.reason = reason
    if count > 1 then
      entry.count = count
      entry.until_ms = tonumber(until_ms)
    end
    result = {'skipped', reason}
  else
    local rec = cjson.decode(record)
    local wk = wfkey(P, rec.id)
    if redis.call('EXISTS', wk) == 1 then
      entry.action = 'existing'
      entry.workflow = rec.id
      result = {'existing', rec.id}
    else
      local last = f[4]
      local busy = running(P, last)
      if busy and overlap == 'skip' then
        entry.action = 'skipped'
        entry.reason = 'overlap: the previous run ' .. last .. ' is still running'
        result = {'skipped', entry.reason}
      elseif busy and overlap == 'buffer-one' then
        if f[5] and f[5] ~= '' then
          entry.action = 'skipped'
          entry.reason = 'overlap: the previous run ' .. last ..
            ' is still running and a run is already buffered'
          result = {'skipped', entry.reason}
        else
          redis.call('HSET', key, 'buffered', record, 'buffered_ms', fire_ms)
          entry.action = 'buffered'
          entry.workflow = rec.id
          entry.reason = 'overlap: starts when ' .. last .. ' ends'
          result = {'buffered', rec.id}
        end
      else
        local cancelled = ''
        if busy and overlap == 'cancel-other' then
          if request_cancel(P, last, now) then
            cancelled = last
            entry.cancelled = last
          end
        end
        create(P, rec, now)
        redis.call('HSET', key, 'last_wf', rec.id, 'last_fire_ms', fire_ms)
        entry.action = 'started'
        entry.workflow = rec.id
        result = {'started', rec.id, cancelled}
      end
    end
  end
  if mode == 'due' then
    redis.call('HSET', key, 'next_ms', next_ms, 'due_ms', next_due)
  end
  redis.call('HSET', key, 'updated_ms', now)
  sched_log(key, entry, log_max)
  sched_place(P, key, sid, now)
  return result
end)

register('drover_sched_buffer', function(keys, args)
  local P, sid, now, log_max = args[1], args[2], tonumber(args[3]), tonumber(args[4])
  local key = keys[1]
  if not is_schedule(key, sid) then
    return {'none'}
  end
  local f = redis.call('HMGET', key, 'buffered', 'buffered_ms', 'last_wf')
  if not f[1] or f[1] == '' then
    sched_place(P, key, sid, now)
    return {'none'}
  end
  if running(P, f[3]) then
    sched_place(P, key, sid, now)
    return {'waiting'}
  end
  local rec = cjson.decode(f[1])
  redis.call('HDEL', key, 'buffered', 'buffered_ms')
  local entry = {fire_ms = tonumber(f[2]), at_ms = now, mode = 'buffered', workflow = rec.id}
  if redis.call('EXISTS', wfkey(P, rec.id)) == 1 then
    entry.action = 'existing'
  else
    create(P, rec, now)
    redis.call('HSET', key, 'last_wf', rec.id, 'last_fire_ms', f[2])
    entry.action = 'started'
  end
  sched_log(key, entry, log_max)
  sched_place(P, key, sid, now)
  return {entry.action == 'started' and 'started' or 'existing', rec.id}
end)

register('drover_sched_take', function(keys, args)
  local now, n, lease = tonumber(args[2]), tonumber(args[3]), tonumber(args[4])
  local due = redis.call('ZRANGEBYSCORE', keys[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, n)
  for i = 1, #due, 2 do
    redis.call('ZADD', keys[1], 'XX', now + lease, due[i])
  end
  return due
end)

register('drover_sched_requeue', function(keys, args)
  local P, sid, now = args[1], args[2], tonumber(args[3])
  if is_schedule(keys[1], sid) then
    sched_place(P, keys[1], sid, now)
  end
  return 1
end)
