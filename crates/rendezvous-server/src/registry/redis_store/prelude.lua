-- Shared by every script of the Redis task store (redis_store.rs): the
-- shape of a task and the rules of its leases. Times are Redis's own clock
-- (TIME), in ms, so that the replicas' clocks never matter.
--
-- KEYS[1] of a task script is the task ID's key, a hash: one field per
-- owner (the owner as printed), whose value is JSON:
--   {"s": read-write secret digest (64 hex digits),
--    "r": read-only secret digest, absent when the task has none,
--    "h": {host name: {"id": host ID, "rep": replica ID,
--                      "url": the replica's advertise URL,
--                      "exp": when its lease ends}},
--    "e": when a task without a live host is forgotten, absent otherwise}
-- A host whose lease has ended counts as absent; a task with a live host
-- is forgotten `grace` after its last lease ends, else at "e".

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The member naming owner's task `id` in the index sets: the owner's
-- length first, so that neither part's ':' can make two tasks one.
local function member(owner, id)
  return string.len(owner) .. ':' .. owner .. id
end

-- A task from its JSON, or nil for anything malformed.
local function decode(raw)
  local ok, task = pcall(cjson.decode, raw)
  if not ok or type(task) ~= 'table' or type(task.s) ~= 'string' then
    return nil
  end
  if type(task.h) ~= 'table' then
    task.h = {}
  end
  return task
end

-- Drops the hosts whose lease has ended; returns when the task is
-- forgotten and how many live hosts it has.
local function settle(task, now, grace)
  local live, last = 0, 0
  for name, host in pairs(task.h) do
    local exp = tonumber(host.exp) or 0
    if exp <= now then
      task.h[name] = nil
    else
      live = live + 1
    end
    if exp > last then
      last = exp
    end
  end
  if live > 0 then
    task.e = nil
    return last + grace, live
  end
  if task.e == nil then
    task.e = last + grace
  end
  return tonumber(task.e) or 0, 0
end

-- Every owner's task of `key`, settled, with when each is forgotten and
-- how many there are; forgotten ones are deleted from the key and the
-- index.
local function load_all(key, index, id, now, grace)
  local flat = redis.call('HGETALL', key)
  local tasks, expiry, count = {}, {}, 0
  for i = 1, #flat, 2 do
    local owner, task = flat[i], decode(flat[i + 1])
    local exp = task and settle(task, now, grace)
    if task == nil or exp <= now then
      redis.call('HDEL', key, owner)
      redis.call('ZREM', index, member(owner, id))
    else
      tasks[owner], expiry[owner], count = task, exp, count + 1
    end
  end
  return tasks, expiry, count
end

-- Makes `key` expire with the last of its tasks (`expiry`: owner -> ms).
local function expire_key(key, expiry)
  local latest = 0
  for _, exp in pairs(expiry) do
    if exp > latest then
      latest = exp
    end
  end
  if latest == 0 then
    redis.call('DEL', key)
  else
    redis.call('PEXPIREAT', key, latest)
  end
end

-- Writes owner's task back, forgotten at `exp`.
local function save(key, index, id, owner, task, exp, expiry)
  redis.call('HSET', key, owner, cjson.encode(task))
  redis.call('ZADD', index, exp, member(owner, id))
  expiry[owner] = exp
  expire_key(key, expiry)
end

-- How many tasks the index holds, after forgetting those past their time.
local function count_tasks(index, now)
  redis.call('ZREMRANGEBYSCORE', index, '-inf', now)
  return redis.call('ZCARD', index)
end
