-- TaskStore::hosts_of: the task's host names with a live lease, and whose.
-- KEYS: 1 the task ID's key. ARGV: 1 owner.
-- Returns a flat list: host name, replica ID, advertise URL, ...
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then
  return {}
end
local task = decode(raw)
if task == nil then
  return {}
end
local now = now_ms()
local result = {}
for name, host in pairs(task.h) do
  if (tonumber(host.exp) or 0) > now then
    result[#result + 1] = name
    result[#result + 1] = host.rep
    result[#result + 1] = host.url
  end
end
return result
