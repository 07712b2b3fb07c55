-- TaskStore::holders_of: the replicas whose live lease holds a host name
-- of a task ID, under any owner (for a guest's unary call that names only
-- the task and host; the replica it reaches checks the guest itself).
-- KEYS: 1 the task ID's key. ARGV: 1 host name.
-- Returns a flat list: replica ID, advertise URL, ...
local fields = redis.call('HGETALL', KEYS[1])
local now = now_ms()
local result = {}
for i = 2, #fields, 2 do
  local task = decode(fields[i])
  local host = task and task.h[ARGV[1]]
  if host ~= nil and (tonumber(host.exp) or 0) > now then
    result[#result + 1] = host.rep
    result[#result + 1] = host.url
  end
end
return result
