--[[
drover_claim: hand up to `max` of the most urgent runnable tasks to a worker, each under a fresh lease.
KEYS[1]  P.."ready"
ARGV     P, worker id, now, lease ms, batch (max items promoted or reclaimed per call), scan (max
         candidates examined), history max, max (tasks to claim), block ms (how long the caller
         blocks on the wake list when it finds nothing; 0: it does not block)
Returns  {next, expired, claim...} where next is the earliest time (ms) a delayed task or a lease
         falls due (or false), expired the number of expired leases this call reclaimed, and each
         claim is {id, token, record (flat HGETALL), outputs (flat HGETALL), signals
         (flat HGETALL)}
Invariants:
  - bounded: at most `batch` delayed tasks promoted, `batch` expired leases reclaimed and `scan`
    candidates examined per call, whatever the backlog;
  - a task runs only with every permit it needs, taken here atomically with the lease; a full
    semaphore parks the task in that semaphore's wait queue (it waits, it does not fail);
  - each claim gets a fencing token larger than any before it;
  - an expired lease frees its step permits and counts an attempt.
]]
register('drover_claim', function(keys, args)
  local P, worker, now, lease_ms = args[1], args[2], tonumber(args[3]), tonumber(args[4])
  local batch, scan, hist_max = tonumber(args[5]), tonumber(args[6]), tonumber(args[7])
  local max = tonumber(args[8])
  local claimed = {}
  local block_ms = tonumber(args[9]) or 0
  -- This worker is awake; sleepers whose block ended (dead workers too) are gone.
  redis.call('ZREM', P .. 'sleepers', worker)
  redis.call('ZREMRANGEBYSCORE', P .. 'sleepers', '-inf', now)

  -- Promote due delayed tasks.
  local due = redis.call('ZRANGEBYSCORE', P .. 'delayed', '-inf', now, 'WITHSCORES', 'LIMIT', 0, batch)
  for i = 1, #due, 2 do
    redis.call('ZREM', P .. 'delayed', due[i])
    enqueue_ready(P, due[i], tonumber(due[i + 1]))
  end

  -- Reclaim expired leases: their workers are gone or stalled.
  local expired = redis.call('ZRANGEBYSCORE', P .. 'leases', '-inf', now, 'LIMIT', 0, batch)
  for _, id in ipairs(expired) do
    local wk = wfkey(P, id)
    redis.call('ZREM', P .. 'leases', id)
    local f = redis.call('HMGET', wk, 'lease_token', 'lease_worker', 'lease_start', 'step', 'attempt', 'phase')
    release_step_permits(P, id)
    push_history(wk .. ':hist', cjson.encode({
      step = tonumber(f[4]), attempt = tonumber(f[5]), phase = f[6], worker = f[2],
      token = tonumber(f[1]), start_ms = tonumber(f[3]), end_ms = now, outcome = 'lease-expired',
      error = 'lease expired: worker ' .. tostring(f[2]) .. ' stopped renewing it',
    }), hist_max)
    redis.call('HDEL', wk, 'lease_token', 'lease_worker', 'lease_start', 'lease_until')
    redis.call('HINCRBY', wk, 'attempt', 1)
    redis.call('HSET', wk, 'updated_ms', now)
    enqueue_ready(P, id, now)
  end

  for _ = 1, scan do
    if #claimed >= max then
      break
    end
    local top = redis.call('ZPOPMIN', P .. 'ready', 1)
    if not top[1] then
      break
    end
    local id, sc = top[1], top[2]
    local wk = wfkey(P, id)
    local f = redis.call('HMGET', wk, 'paused', 'cancel', 'task', 'state', 'permits', 'phase', 'created_ms')
    if f[3] then
      if f[1] == '1' and f[2] ~= '1' then
        redis.call('SADD', P .. 'paused', id)
        redis.call('HSET', wk, 'loc', 'paused')
      else
        local permits = f[5] and cjson.decode(f[5]) or {}
        local blocked = nil
        if f[2] ~= '1' or f[6] == 'compensate' then
          blocked = blocked_on(P, id, permits)
        else
          permits = {}
        end
        if blocked then
          redis.call('ZADD', P .. 'semwait:' .. blocked, sc, id)
          redis.call('HSET', wk, 'loc', 'sem:' .. blocked)
          if f[4] == 'pending' or f[4] == 'running' then
            set_state(P, id, 'waiting')
          end
          -- A slot this task could not use must not strand the waiters queued behind it.
          for _, p in ipairs(permits) do
            local sk = P .. 'sem:' .. p.name
            if p.name ~= blocked and redis.call('ZCARD', sk) < p.capacity then
              local w = redis.call('ZPOPMIN', P .. 'semwait:' .. p.name, 1)
              if w[1] then
                redis.call('ZADD', P .. 'ready', w[2], w[1])
                redis.call('HSET', wfkey(P, w[1]), 'loc', 'ready')
              end
            end
          end
        else
          claimed[#claimed + 1] = grant(P, id, worker, now, args[3], lease_ms, permits, f[4], f[7])
        end
      end
    end
  end

  local next = false
  local d = redis.call('ZRANGE', P .. 'delayed', 0, 0, 'WITHSCORES')
  local l = redis.call('ZRANGE', P .. 'leases', 0, 0, 'WITHSCORES')
  if d[2] then
    next = tonumber(d[2])
  end
  if l[2] and (not next or tonumber(l[2]) < next) then
    next = tonumber(l[2])
  end
  if #claimed == 0 and block_ms > 0 then
    -- The caller will block on the wake list: enter it so enqueues wake it.
    redis.call('ZADD', P .. 'sleepers', now + block_ms, worker)
  end
  local reply = {next, #expired}
  for _, c in ipairs(claimed) do
    reply[#reply + 1] = c
  end
  return reply
end)
