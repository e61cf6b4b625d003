--[[
drover_commit: apply the engine's decision about a finished attempt, fenced by the lease.
KEYS[1]  the workflow record
ARGV     P, id, fencing token, now, history max, commit (see below), worker, lease ms,
         continue (2: if the next task is runnable now, lease it straight back to this worker;
         1: the same, and the reply carries the signals delivered so far, as workers of the release
         before read them; 0: do not),
         then the commit's JSON documents, each an argument of its own ("" when absent), so that
         cjson neither parses nor copies them: history (the entry), output?, result?, task?,
         progress?, error?, permits? (the next task's, absent when none)
         commit: built by the worker from the pure engine's Transition, as one line of words
           separated by single spaces ("" for an absent one), so that no JSON is parsed on the hot
           path: state step attempt phase due wait handles_cancel(1|0) cause output_step
           resume_from max_descendants (the most workflows the top-level workflow may create in
           all; 0: no limit), then, only for a wait on a signal or on children, a space and a JSON
           object {signal?, join?, children [{id, kind, input, priority, labels, task, due}]};
           wait is "none" | "signal" | "children" | "pause".
           (A JSON object with all of these fields, as workers of the release before send it, is
           read too, and such a commit gets its continuation in that release's reply, {"ok",
           "continued", {id, token, signals, kids_step, lease_until}}.)
Returns  {"ok"}, {"ok", "continued", id, token, kids_step, lease_until, signals...} when the next task
         was leased back to the caller (signals, only for continue 1: the flat HGETALL of what was
         delivered to the workflow so far), {"ok", "duplicate"} for a retried commit that already
         applied,
         {"stale"} when the token is not the current lease's (the attempt's result is discarded),
         {"limit", created, asked} when the children would take the top-level workflow past
         max_descendants (nothing is written; the worker commits a failure instead), or {"gone"}
Invariants: only the current lease holder commits; output, history, the next task, the release of the
lease and of the step's permits happen together or not at all; a re-run of step N can never create
step N+1 twice (the cursor moved, so the stale commit is refused).

drover_commit_batch: several commits (of workflows of one shard) in one call, each applied as
drover_commit applies it, in order.
KEYS     the workflow records, one per commit
ARGV     P, then for each commit its 15 arguments as drover_commit takes them after P
Returns  one drover_commit reply per commit, in order; a commit that raised an error has
         {"error", message} in its place and the ones after it are still applied (each is its own
         workflow's).
]]
-- Each optional record field with where the HMGET below reads it (built once: a table built in
-- every call costs more than the commands around it). The task is not read (0): it is there until
-- the workflow ends, and it is the longest field, which Redis would copy into Lua for nothing.
local OPTIONAL = {{'cause', 9}, {'error', 10}, {'progress', 11}, {'resume_from', 12}, {'result', 13},
  {'task', 0}, {'permits', 3}}

-- The commit's JSON documents, passed as arguments of their own after the commit (see the header).
local DOCUMENTS = {'history', 'output', 'result', 'task', 'progress', 'error', 'permits'}

-- Read only, shared by the commits whose next task takes no permits, or that start no children.
local NO_PERMITS = {}
local NO_CHILDREN = {}

-- The commit line's words (see the header); `extra` is the JSON object that may follow them.
local LINE = '^(%S+) (%S+) (%S+) (%S+) (%S+) (%S+) (%S) (%S*) (%S*) (%S*) (%S+) ?(.*)$'

local function maybe(word)
  if word ~= '' then
    return word
  end
  return nil
end

-- The commit as a table: its line read, or (from a worker of the release before) its JSON decoded.
local function read_commit(line)
  if string.byte(line, 1) == 123 then -- '{'
    local c = cjson.decode(line)
    c.legacy = true
    return c
  end
  local state, step, attempt, phase, due, wait, hc, cause, output_step, resume_from, max_desc, extra =
    string.match(line, LINE)
  if not state then
    error('unreadable commit line: ' .. line)
  end
  local c = {state = state, step = step, attempt = attempt, phase = phase, due = tonumber(due),
    wait = wait, handles_cancel = hc == '1', cause = maybe(cause), output_step = maybe(output_step),
    resume_from = maybe(resume_from), max_descendants = max_desc}
  if extra ~= '' then
    local x = cjson.decode(extra)
    c.signal, c.join, c.children = x.signal, x.join, x.children
  end
  c.children = c.children or NO_CHILDREN
  return c
end

-- The lower bound of more urgent ready tasks' scores, per priority (as found in records), built
-- once: formatting a number costs more than the lookup it is for.
local URGENT = {}
local function more_urgent_than(priority)
  local bound = URGENT[priority]
  if not bound then
    bound = '(' .. int(score(tonumber(priority), 0))
    URGENT[priority] = bound
  end
  return bound
end

-- The record fields only some commits need (see `rare` in commit_one).
local function rare_fields(wk)
  local f = redis.call('HMGET', wk, 'ticket', 'tparent', 'created_ms', 'parent')
  return {ticket = f[1], tparent = f[2], created = f[3], parent = f[4]}
end

-- args[o + n] is the n-th argument of a lone drover_commit (o = 0); a batch passes its whole ARGV and
-- the commit's offset, so that no table is built per commit.
local function commit_one(wk, args, o)
  local P, id, token = args[1], args[o + 2], args[o + 3]
  local now, hist_max = tonumber(args[o + 4]), tonumber(args[o + 5])
  -- The record check rides on the read every commit makes (a step costs no extra command): a hash
  -- whose `id` is not this id is no workflow record (a sub-key such as <id>:out); any other type
  -- makes HMGET fail, before anything is written.
  local K = shard_keys(P)
  local held = redis.call('HMGET', wk, 'lease_token', 'cancel', 'permits', 'state', 'paused',
    'priority', 'kids_step', 'id', 'cause', 'error', 'progress', 'resume_from', 'result', 'lease_until')
  -- Fields only some paths use (an ending, a wait, a change of state), read once when first needed
  -- (`rare = rare or rare_fields(wk)`): most commits take none of those paths, and each field asked
  -- for costs a lookup (in a listpack record, an absent one costs a scan of the whole record).
  local rare = nil
  if held[8] ~= id then
    return {'gone'}
  end
  if held[1] ~= token then
    -- Only a retried commit gets here with its token, so the last token is read only here.
    if redis.call('HGET', wk, 'last_token') == token then
      return {'ok', 'duplicate'}
    end
    if not held[4] then
      return {'gone'}
    end
    return {'stale'}
  end
  local c = read_commit(args[o + 6])
  for i, field in ipairs(DOCUMENTS) do
    local doc = args[o + 9 + i]
    if doc and doc ~= '' then
      c[field] = doc
    end
  end
  -- Children count against their top-level workflow's budget; refused before anything is written.
  -- The children not created yet (a retried commit finds some already there), found once.
  local root_key, fresh = nil, {}
  if c.wait == 'children' then
    root_key = wfkey(P, redis.call('HGET', wk, 'root') or id)
    for _, child in ipairs(c.children) do
      if redis.call('EXISTS', wfkey(P, child.id)) == 0 then
        fresh[#fresh + 1] = child
      end
    end
    local made = tonumber(redis.call('HGET', root_key, 'descendants') or '0')
    local max = tonumber(c.max_descendants or 0)
    if max > 0 and #fresh > 0 and made + #fresh > max then
      return {'limit', tostring(made), tostring(#fresh)}
    end
  end

  if held[3] then
    release_step_permits(P, id)
  end
  push_history(wk .. ':hist', c.history, hist_max)
  if c.output_step then
    redis.call('HSET', wk .. ':out', c.output_step, c.output)
  end
  local terminal = c.state == 'succeeded' or c.state == 'failed' or c.state == 'cancelled'
  local cancel_pending = held[2] == '1' and not c.handles_cancel
  -- Continue here (lease the next task straight back to this worker) unless the next task waits,
  -- is not due, the workflow is paused, a more urgent workflow waits or a permit is taken: saves a
  -- queue round trip per step, and finishes started workflows before new ones of the same priority.
  local continue_with = nil
  local continuing = args[o + 9]
  if (continuing == '2' or continuing == '1') and not terminal and not cancel_pending
      and c.wait ~= 'signal' and c.wait ~= 'children' and c.wait ~= 'pause' and c.due <= now and held[5] ~= '1' then
    local permits = c.permits and cjson.decode(c.permits) or NO_PERMITS
    -- Any ready task scoring under this workflow's priority at due time 0 is more urgent. Asked by
    -- score, so Redis formats no double in the reply (its "%.17g" path costs more than the lookup).
    local more_urgent = redis.call('ZRANGE', K.ready, '-inf', more_urgent_than(held[6] or '0'),
      'BYSCORE', 'LIMIT', '0', '1')[1]
    if not more_urgent and not blocked_on(P, id, permits) then
      continue_with = permits
    end
  end

  -- The record: one HSET (shared with the next lease's when continuing), and an HDEL only of fields
  -- that are there (read above) or of the lease, which a continuation's HSET overwrites instead.
  local set = {'last_token', token, 'step', c.step, 'attempt', c.attempt, 'phase', c.phase}
  local del = nil
  if not continue_with then
    -- (A continuation's lease sets `loc` and `updated_ms`.)
    set[9], set[10], set[11], set[12] = 'loc', '', 'updated_ms', args[o + 4]
    redis.call('ZREM', K.leases, id)
    del = {'lease_token', 'lease_worker', 'lease_start', 'lease_until'}
  end
  for _, f in ipairs(OPTIONAL) do
    local field, present = f[1], f[2] == 0 or held[f[2]]
    if c[field] then
      set[#set + 1] = field
      set[#set + 1] = c[field]
    elseif present and (field ~= 'progress' or c.output_step) then
      del = del or {}
      del[#del + 1] = field
    end
  end
  if held[4] ~= c.state then
    rare = rare or rare_fields(wk)
    move_state(P, id, held[4], c.state, rare.created)
    set[#set + 1] = 'state'
    set[#set + 1] = c.state
  end
  if terminal then
    set[#set + 1] = 'finished_ms'
    set[#set + 1] = args[o + 4]
  end
  if del then
    redis.call('HDEL', wk, unpack(del))
  end
  if continue_with then
    -- The committer knows the record; send only what it cannot know.
    if c.state == 'pending' or c.state == 'waiting' then
      rare = rare or rare_fields(wk)
    end
    local reply = grant(P, id, args[o + 7], now, args[o + 4], tonumber(args[o + 8]), continue_with,
      c.state, rare and rare.created, held[7] or '', set, held[14], continuing == '1')
    if c.legacy then
      -- A worker of the release before reads the claim nested: {id, token, signals, kids_step,
      -- lease_until}.
      local rx = {}
      for i = 7, #reply do
        rx[#rx + 1] = reply[i]
      end
      return {'ok', 'continued', {reply[3], reply[4], rx, reply[5], reply[6]}}
    end
    return reply
  end
  redis.call('HSET', wk, unpack(set))

  if terminal then
    redis.call('ZADD', K.finished, now, id)
    local names = redis.call('SMEMBERS', wk .. ':held')
    for _, name in ipairs(names) do
      release(P, id, name)
    end
    if #names > 0 then
      redis.call('DEL', wk .. ':held')
    end
    local r = rare or rare_fields(wk)
    notify_parent(P, r.parent, c.state, now)
    -- Write-back: a ticket's workflow ended, or one of its children (a milestone).
    if r.ticket then
      outbox_push(P, {event = 'ended', wf = id, state = c.state, ticket = cjson.decode(r.ticket)}, now)
    elseif r.tparent then
      local parent = r.parent
      local ticket = parent and redis.call('HGET', wfkey(P, parent), 'ticket')
      if ticket then
        outbox_push(P, {event = 'milestone', wf = id, root = parent, state = c.state,
          ticket = cjson.decode(ticket)}, now)
      end
    end
    return {'ok'}
  end

  if c.wait == 'signal' and not cancel_pending then
    local payload = redis.call('LPOP', wk .. ':sig:' .. c.signal)
    if payload then
      redis.call('HSET', wk .. ':rx', c.step .. ':' .. c.signal, payload)
      enqueue_ready(P, id, now)
    else
      redis.call('HSET', wk, 'loc', 'signal:' .. c.signal)
      local ticket = (rare or rare_fields(wk)).ticket
      if ticket then
        outbox_push(P, {event = 'waiting', wf = id, signal = c.signal, step = c.step,
          ticket = cjson.decode(ticket)}, now)
      end
    end
  elseif c.wait == 'children' then
    local n = #fresh
    local ticket = (rare or rare_fields(wk)).ticket
    for _, child in ipairs(fresh) do
      child.parent = id
      create(P, child, now)
      redis.call('RPUSH', wk .. ':kids', child.id)
      if ticket then
        -- Its end is a milestone of the ticket's workflow.
        redis.call('HSET', wfkey(P, child.id), 'tparent', '1')
      end
    end
    if n > 0 and redis.call('EXISTS', root_key) == 1 then
      redis.call('HINCRBY', root_key, 'descendants', n)
    end
    redis.call('HSET', wk, 'kids_step', c.step, 'kids_pending', n, 'kids_failed', 0, 'join', c.join)
    if n == 0 or cancel_pending then
      enqueue_ready(P, id, now)
    else
      redis.call('HSET', wk, 'loc', 'children')
    end
  elseif c.wait == 'pause' and not cancel_pending then
    local r = rare or rare_fields(wk)
    if r.ticket then
      local reason = c.progress and cjson.decode(c.progress).paused or nil
      outbox_push(P, {event = 'paused', wf = id, reason = reason, ticket = cjson.decode(r.ticket)}, now)
    end
    redis.call('HSET', wk, 'paused', '1', 'loc', 'paused')
    redis.call('SADD', P .. 'paused', id)
    redis.call('ZADD', P .. 'idx:paused', r.created, id)
  elseif cancel_pending then
    -- A cancellation arrived while the step ran: hand it to a worker right away.
    enqueue_ready(P, id, now)
  else
    schedule(P, id, c.due, now)
  end
  return {'ok'}
end

register('drover_commit', function(keys, args)
  return commit_one(keys[1], args, 0)
end)

local COMMIT_ARGS = 15
register('drover_commit_batch', function(keys, args)
  local replies = {}
  for i = 1, #keys do
    local ok, reply = pcall(commit_one, keys[i], args, (i - 1) * COMMIT_ARGS)
    if ok then
      replies[i] = reply
    else
      -- redis.call raises a table {err = ...}; a Lua error is a string. Not an error reply: one
      -- nested in the array would make clients fail the whole call.
      replies[i] = {'error', type(reply) == 'table' and reply.err or tostring(reply)}
    end
  end
  return replies
end)
