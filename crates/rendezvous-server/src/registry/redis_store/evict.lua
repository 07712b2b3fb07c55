-- Forgets owner's task of one ID if it still has no host: the oldest
-- hostless task past the bound (see release.lua).
-- KEYS: 1 the task ID's key, 2 the task index.
-- ARGV: 1 task ID, 2 owner, 3 hostless grace (ms).
-- Returns the tasks in the index.
local key, index = KEYS[1], KEYS[2]
local id, owner, grace = ARGV[1], ARGV[2], tonumber(ARGV[3])
local now = now_ms()
local tasks, expiry = load_all(key, index, id, now, grace)
local task = tasks[owner]
if task ~= nil and next(task.h) == nil then
  redis.call('HDEL', key, owner)
  redis.call('ZREM', index, member(owner, id))
  expiry[owner] = nil
  expire_key(key, expiry)
end
return count_tasks(index, now)
