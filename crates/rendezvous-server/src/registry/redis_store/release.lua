-- TaskStore::remove_host: frees a name if this replica's host of that ID
-- holds it; a task left without a host is forgotten after the grace, and
-- the oldest hostless tasks past the bound are named for eviction.
-- KEYS: 1 the task ID's key, 2 the task index, 3 the hostless index.
-- ARGV: 1 task ID, 2 owner, 3 host name, 4 host ID, 5 replica ID,
--       6 hostless grace (ms), 7 most hostless tasks.
-- Returns {tasks in the index (as text), index members to evict...}.
local key, index, hostless = KEYS[1], KEYS[2], KEYS[3]
local id, owner, name, host_id, replica = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local grace, max_hostless = tonumber(ARGV[6]), tonumber(ARGV[7])
local now = now_ms()
local tasks, expiry = load_all(key, index, id, now, grace)
local task = tasks[owner]
if task ~= nil then
  local held = task.h[name]
  if held ~= nil and held.id == host_id and held.rep == replica then
    task.h[name] = nil
    local exp, live = settle(task, now, grace)
    if live == 0 then
      task.e = now + grace
      exp = task.e
      redis.call('ZADD', hostless, exp, member(owner, id))
    end
    save(key, index, id, owner, task, exp, expiry)
  end
end

redis.call('ZREMRANGEBYSCORE', hostless, '-inf', now)
local result = {0}
local over = redis.call('ZCARD', hostless) - max_hostless
if over > 0 then
  local oldest = redis.call('ZPOPMIN', hostless, over)
  for i = 1, #oldest, 2 do
    result[#result + 1] = oldest[i]
  end
end
result[1] = tostring(count_tasks(index, now))
return result
