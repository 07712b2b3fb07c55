-- TaskStore::owner_of: the replica whose live lease holds a host name.
-- KEYS: 1 the task ID's key. ARGV: 1 owner, 2 host name.
-- Returns {replica ID, advertise URL}, or {} when no lease holds it.
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then
  return {}
end
local task = decode(raw)
local host = task and task.h[ARGV[2]]
if host == nil or (tonumber(host.exp) or 0) <= now_ms() then
  return {}
end
return {host.rep, host.url}
