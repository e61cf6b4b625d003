#!lua name=drover
--[[
Drover's Redis function library: shared helpers. Every function file that follows is appended to this
one and loaded as a single library (FUNCTION LOAD REPLACE), so the helpers below are shared and every
state change happens inside one atomic function call.

Conventions:
  P      the shard prefix, "drover:{0}:". Every key of a workflow, and the queues it sits in, share the
         shard's hash tag, so a function only ever touches one cluster slot.
  now    milliseconds since the Unix epoch, passed in by the caller, never read inside a function.
  id     a workflow id; its record is the hash P.."wf:"..id.
  loc    where a workflow's task is: "ready", "delayed", "leased", "paused", "sem:<name>",
         "signal:<name>", "children" or "" (none: the workflow has ended).
Invariant: a non-terminal workflow has exactly one task and `loc` names the one structure that holds it.
]]

local PRIORITY_SPAN = 4398046511104 -- 2^42 ms, past the year 2100: priority dominates, due time orders

local function wfkey(P, id)
  return P .. 'wf:' .. id
end

-- The shard's keys that a step's commit names, built once per prefix: each concatenation in a call
-- has Lua hash and allocate a new string, and collect it later. (Prefixes are the shards'.)
local SHARD_KEYS = {}
local function shard_keys(P)
  local k = SHARD_KEYS[P]
  if not k then
    k = {ready = P .. 'ready', leases = P .. 'leases', fence = P .. 'fence', finished = P .. 'finished'}
    SHARD_KEYS[P] = k
  end
  return k
end

-- Whether `wk` is the record of workflow `id`, not one of its sub-keys (":out", ":hist", ...) nor any
-- other key: every function checks this before it reads or writes anything of a workflow.
local function is_record(wk, id)
  return redis.call('TYPE', wk).ok == 'hash' and redis.call('HGET', wk, 'id') == id
end

-- An integer as redis.call should get it: Redis 7.0 formats a Lua number argument with "%.17g",
-- whose floating-point path costs more than the command on the hot path; "%d" does not.
local function int(n)
  return string.format('%d', n)
end

local function score(priority, due)
  return (100 - priority) * PRIORITY_SPAN + due
end

-- Wake an idle worker, if any sleeps: a claim that finds nothing enters its worker in `sleepers`
-- until the end of its longest block (so a dead worker's entry expires by itself).
local function wake(P)
  if redis.call('ZCARD', P .. 'sleepers') > 0 then
    redis.call('LPUSH', P .. 'wake', '1')
    redis.call('LTRIM', P .. 'wake', 0, 63)
  end
end

local function enqueue_ready(P, id, due)
  local wk = wfkey(P, id)
  local priority = tonumber(redis.call('HGET', wk, 'priority') or '0')
  redis.call('ZADD', P .. 'ready', score(priority, due), id)
  redis.call('HSET', wk, 'loc', 'ready')
  wake(P)
end

-- Queue the task now or at its due time.
local function schedule(P, id, due, now)
  if due > now then
    redis.call('ZADD', P .. 'delayed', due, id)
    redis.call('HSET', wfkey(P, id), 'loc', 'delayed')
    -- Idle workers recompute how long they may block.
    wake(P)
  else
    enqueue_ready(P, id, due)
  end
end

-- Take the task out of whatever holds it (not the lease: leases end by commit or expiry).
local function unlocate(P, id)
  local wk = wfkey(P, id)
  local loc = redis.call('HGET', wk, 'loc') or ''
  if loc == 'ready' then
    redis.call('ZREM', P .. 'ready', id)
  elseif loc == 'delayed' then
    redis.call('ZREM', P .. 'delayed', id)
  elseif loc == 'paused' then
    redis.call('SREM', P .. 'paused', id)
  elseif string.sub(loc, 1, 4) == 'sem:' then
    redis.call('ZREM', P .. 'semwait:' .. string.sub(loc, 5), id)
  end
  redis.call('HSET', wk, 'loc', '')
  return loc
end

-- Move the state index entry from `old` to `new` (the caller read both the state and created_ms and
-- writes the record's `state` itself, in a write it makes anyway).
local function move_state(P, id, old, new, created)
  if old then
    redis.call('ZREM', P .. 'idx:state:' .. old, id)
  end
  redis.call('ZADD', P .. 'idx:state:' .. new, created, id)
end

local function set_state(P, id, new)
  local wk = wfkey(P, id)
  local old = redis.call('HGET', wk, 'state')
  if old ~= new then
    move_state(P, id, old, new, redis.call('HGET', wk, 'created_ms'))
    redis.call('HSET', wk, 'state', new)
  end
end

-- Give back one unit of semaphore `name` held by `id` and let one waiter try again.
local function release(P, id, name)
  if redis.call('ZREM', P .. 'sem:' .. name, id) == 1 then
    -- `sems` names the semaphores with holders, so metrics read them without a scan.
    if redis.call('ZCARD', P .. 'sem:' .. name) == 0 then
      redis.call('SREM', P .. 'sems', name)
    end
    local w = redis.call('ZPOPMIN', P .. 'semwait:' .. name, 1)
    if w[1] then
      redis.call('ZADD', P .. 'ready', w[2], w[1])
      redis.call('HSET', wfkey(P, w[1]), 'loc', 'ready')
      wake(P)
    end
  end
end

-- Release the step-scoped permits of the workflow's current task (kept apart from the task, and only
-- when there are some, so most commits decode nothing).
local function release_step_permits(P, id)
  local raw = redis.call('HGET', wfkey(P, id), 'permits')
  if not raw then
    return
  end
  for _, p in ipairs(cjson.decode(raw)) do
    if p.scope ~= 'workflow' then
      release(P, id, p.name)
    end
  end
end

-- `hk`: the workflow's history list (<record>:hist).
local function push_history(hk, entry, max)
  if redis.call('RPUSH', hk, entry) > max then
    redis.call('LTRIM', hk, -max, -1)
  end
end

-- The first of `permits` that `id` cannot take now, or nil when it can take them all.
local function blocked_on(P, id, permits)
  for _, p in ipairs(permits) do
    local sk = P .. 'sem:' .. p.name
    if not redis.call('ZSCORE', sk, id) and redis.call('ZCARD', sk) >= p.capacity then
      return p.name
    end
  end
  return nil
end

-- Lease the workflow's task to `worker`, taking `permits`; returns the claim as workers read it, or,
-- when `brief` is the record's kids_step (the caller already holds the record), the commit's whole
-- reply {"ok", "continued", id, token, kids_step, lease_until, signals (flat pairs)...}, with the
-- signals only when `with_rx` (a worker of the release before asks for them; a worker now keeps
-- the ones its claim read, as nothing writes <id>:rx while the workflow is leased). `now_s`:
-- `now` as the caller got it (a string), so that no number is formatted for it. `extra`: more
-- record fields (a flat list) written in the same HSET. `kept_until`: the expiry of the lease the
-- caller held on this workflow (a continuation); while less than a sixth of the lease has passed
-- since it was set, the new lease keeps it (the `leases` entry stays as it is: one write fewer per
-- continued step), else it is extended.
-- `created`: the record's created_ms, read by the caller, so that a pending or waiting workflow's
-- move to running reads nothing more and rides on the lease's HSET (nil when `state` is neither).
-- A continuation (`brief`) is granted to the worker whose lease it committed under, so the
-- record's `lease_worker` and `loc` already say what the new lease would write.
-- Invariant: while leased, the record's `lease_until` is the workflow's score in `leases`.
local function grant(P, id, worker, now, now_s, lease_ms, permits, state, created, brief, extra, kept_until,
                     with_rx)
  local wk = wfkey(P, id)
  local K = shard_keys(P)
  for _, p in ipairs(permits) do
    redis.call('ZADD', P .. 'sem:' .. p.name, 'NX', now_s, id)
    redis.call('SADD', P .. 'sems', p.name)
    if p.scope == 'workflow' then
      redis.call('SADD', wk .. ':held', p.name)
    end
  end
  local token = redis.call('INCR', K.fence)
  local set = extra or {}
  local n = #set
  set[n + 1], set[n + 2], set[n + 3], set[n + 4] = 'lease_token', int(token), 'lease_start', now_s
  set[n + 5], set[n + 6] = 'updated_ms', now_s
  n = n + 6
  if not brief then
    -- (A continuation's committer held the lease: `lease_worker` is already it, `loc` is leased.)
    set[n + 1], set[n + 2], set[n + 3], set[n + 4] = 'lease_worker', worker, 'loc', 'leased'
    n = n + 4
  end
  local kept = kept_until and tonumber(kept_until)
  local until_s = kept_until
  if not kept or (kept - now) * 6 < lease_ms * 5 then
    until_s = int(now + lease_ms)
    set[n + 1], set[n + 2] = 'lease_until', until_s
    redis.call('ZADD', K.leases, until_s, id)
  end
  if state == 'pending' or state == 'waiting' then
    move_state(P, id, state, 'running', created)
    set[#set + 1], set[#set + 2] = 'state', 'running'
  end
  redis.call('HSET', wk, unpack(set))
  if brief then
    -- Flat: each nested table costs Redis a reply conversion of its own.
    local reply = {'ok', 'continued', id, token, brief, until_s}
    if with_rx then
      local rx = redis.call('HGETALL', wk .. ':rx')
      for i = 1, #rx do
        reply[6 + i] = rx[i]
      end
    end
    return reply
  end
  return {id, token, redis.call('HGETALL', wk), redis.call('HGETALL', wk .. ':out'),
    redis.call('HGETALL', wk .. ':rx')}
end

-- Write a new workflow record, index it and queue its first task.
-- rec: {id, kind, input, priority, labels (object), steps (json string: the step names, absent from
-- callers older than versioned steps), task (json string), permits (json string, absent when none),
-- due, parent?, trace? (W3C traceparent)}
local function create(P, rec, now)
  local wk = wfkey(P, rec.id)
  redis.call('HSET', wk,
    'id', rec.id, 'kind', rec.kind, 'input', rec.input, 'priority', rec.priority,
    'labels', cjson.encode(rec.labels or {}), 'created_ms', now, 'updated_ms', now,
    'step', 0, 'attempt', 1, 'phase', 'forward', 'task', rec.task, 'loc', '')
  if rec.steps then
    redis.call('HSET', wk, 'steps', rec.steps)
  end
  if rec.trace then
    -- The W3C traceparent of the span that created it: every attempt's span joins that trace.
    redis.call('HSET', wk, 'trace', rec.trace)
  end
  if rec.parent then
    -- The top-level workflow counts every workflow created under it (see max_descendants).
    local root = redis.call('HGET', wfkey(P, rec.parent), 'root') or rec.parent
    redis.call('HSET', wk, 'parent', rec.parent, 'root', root)
  end
  if rec.permits then
    redis.call('HSET', wk, 'permits', rec.permits)
  end
  if rec.cluster then
    -- The Kubernetes cluster it acts on; its permits are that cluster's semaphores.
    redis.call('HSET', wk, 'cluster', rec.cluster)
    redis.call('ZADD', P .. 'idx:cluster:' .. rec.cluster, now, rec.id)
  end
  redis.call('ZADD', P .. 'idx:all', now, rec.id)
  if not rec.parent then
    redis.call('ZADD', P .. 'idx:top', now, rec.id)
  end
  redis.call('ZADD', P .. 'idx:kind:' .. rec.kind, now, rec.id)
  for k, v in pairs(rec.labels or {}) do
    redis.call('ZADD', P .. 'idx:label:' .. k .. '=' .. tostring(v), now, rec.id)
  end
  set_state(P, rec.id, 'pending')
  schedule(P, rec.id, rec.due, now)
end

-- Mark a live workflow for cancellation and make its task runnable now, wherever it waited (a
-- leased task sees the mark at its next renewal or commit). The caller checked the record.
local function request_cancel(P, id, now)
  local wk = wfkey(P, id)
  if redis.call('HGET', wk, 'cancel') == '1' then
    return false
  end
  redis.call('HSET', wk, 'cancel', '1', 'updated_ms', now)
  local loc = redis.call('HGET', wk, 'loc')
  if loc ~= 'leased' and loc ~= 'ready' then
    unlocate(P, id)
    enqueue_ready(P, id, now)
  end
  return true
end

-- Append an event to the write-back outbox (a workflow linked to a ticket started, reached a
-- milestone, waits for an approval, ended): the outbox dispatcher turns each into a ticket-update
-- workflow, in order. Written in the same call as the change it reports.
local function outbox_push(P, entry, now)
  entry.seq = redis.call('INCR', P .. 'outbox:seq')
  entry.at_ms = now
  redis.call('RPUSH', P .. 'outbox', cjson.encode(entry))
  redis.call('LPUSH', P .. 'outbox:wake', '1')
  redis.call('LTRIM', P .. 'outbox:wake', 0, 0)
end

-- A child ended: count it on the parent (the record's `parent`, read by the caller) and wake the
-- parent when its join policy is met.
local function notify_parent(P, parent, state, now)
  if not parent then
    return
  end
  local pk = wfkey(P, parent)
  if redis.call('EXISTS', pk) == 0 then
    return
  end
  local pending = redis.call('HINCRBY', pk, 'kids_pending', -1)
  local failed = tonumber(redis.call('HGET', pk, 'kids_failed') or '0')
  if state ~= 'succeeded' then
    failed = redis.call('HINCRBY', pk, 'kids_failed', 1)
  end
  if redis.call('HGET', pk, 'loc') == 'children' then
    local join = redis.call('HGET', pk, 'join')
    if pending <= 0 or (join == 'fail-fast' and failed > 0) then
      enqueue_ready(P, parent, now)
    end
  end
end

-- The library's version, filled in by `Store::load_functions` (a SHA-1 of the text it loads): a
-- process that finds its own version loaded does not load the library again.
redis.register_function{function_name = 'drover_library', flags = {'no-writes'},
  callback = function() return 'DROVER_LIBRARY_VERSION' end}

-- Every function is registered through this guard. A shard whose Redis Cluster slot is being moved
-- (`drover shards move`) holds `<prefix>frozen`, set before the move starts and moved first: a
-- call that starts during the move either finds it (and stops here) or finds it gone from the node
-- it runs on (Redis stops the call at that first access, as a non-local key). Either way nothing is
-- written, and the caller retries (TRYAGAIN is transient) once the shard is on its new node. The
-- functions touch keys they do not declare, which a half-moved slot would otherwise refuse midway,
-- after some writes. args[1] is always the shard's prefix.
-- On one server (no slot can move) the guard is left out: `Store::load_functions` sets this false.
local FROZEN_GUARD = true
local function register(name, fn)
  if not FROZEN_GUARD then
    redis.register_function(name, fn)
    return
  end
  redis.register_function(name, function(keys, args)
    if redis.call('EXISTS', args[1] .. 'frozen') == 1 then
      return redis.error_reply('TRYAGAIN shard frozen while its slot moves to another node')
    end
    return fn(keys, args)
  end)
end
