-- TaskStore::task (ARGV[1] an owner) and tasks_with_id (ARGV[1] '').
-- KEYS: 1 the task ID's key. ARGV: 1 owner or '', 2 hostless grace (ms).
-- Returns a flat list: owner, secret digest, read-only digest or '', ...
-- for each task not yet forgotten. Writes nothing.
local key, wanted, grace = KEYS[1], ARGV[1], tonumber(ARGV[2])
local now = now_ms()
local flat
if wanted == '' then
  flat = redis.call('HGETALL', key)
else
  local raw = redis.call('HGET', key, wanted)
  flat = raw and {wanted, raw} or {}
end
local result = {}
for i = 1, #flat, 2 do
  local task = decode(flat[i + 1])
  if task ~= nil and settle(task, now, grace) > now then
    result[#result + 1] = flat[i]
    result[#result + 1] = task.s
    result[#result + 1] = task.r or ''
  end
end
return result
