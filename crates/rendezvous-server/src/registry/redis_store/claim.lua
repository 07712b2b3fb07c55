-- Claims a host name: TaskStore::add_host (mode "add"), take_over_host
-- ("takeover"), and the lease renewal ("renew": only the name this
-- replica's host already holds, or a free one).
-- KEYS: 1 the task ID's key, 2 the task index, 3 the hostless index.
-- ARGV: 1 mode, 2 task ID, 3 owner, 4 host name, 5 host ID,
--       6 secret digest, 7 read-only digest or '', 8 most hosts per task,
--       9 most owners per task ID, 10 replica ID, 11 advertise URL,
--       12 lease (ms), 13 hostless grace (ms).
-- Returns {outcome, tasks in the index}; outcome is ok, denied, taken,
-- hosts (the hosts per task limit), owners (the owners per ID limit) or,
-- for renew, lost.
local key, index, hostless = KEYS[1], KEYS[2], KEYS[3]
local mode, id, owner, name, host_id = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local secret, read_only = ARGV[6], ARGV[7]
local max_hosts, max_owners = tonumber(ARGV[8]), tonumber(ARGV[9])
local replica, url = ARGV[10], ARGV[11]
local lease, grace = tonumber(ARGV[12]), tonumber(ARGV[13])
local now = now_ms()
local tasks, expiry, owners = load_all(key, index, id, now, grace)
local function answer(outcome)
  if mode == 'renew' and outcome ~= 'ok' then
    outcome = 'lost'
  end
  return {outcome, count_tasks(index, now)}
end

local task = tasks[owner]
if task == nil then
  if owners >= max_owners then
    return answer('owners')
  end
  task = {s = secret, h = {}}
elseif task.s ~= secret or (task.r or '') ~= read_only then
  -- Digests of secrets: comparing them leaks nothing of a secret.
  if next(task.h) ~= nil then
    return answer('denied')
  end
  task.s = secret
end
if read_only ~= '' then
  task.r = read_only
else
  task.r = nil
end

local held = task.h[name]
if held ~= nil then
  local ours = held.id == host_id
    and (mode == 'takeover' or (mode == 'renew' and held.rep == replica))
  if not ours then
    return answer('taken')
  end
else
  local hosts = 0
  for _ in pairs(task.h) do
    hosts = hosts + 1
  end
  if hosts >= max_hosts then
    return answer('hosts')
  end
end

task.h[name] = {id = host_id, rep = replica, url = url, exp = now + lease}
local exp = settle(task, now, grace)
redis.call('ZREM', hostless, member(owner, id))
save(key, index, id, owner, task, exp, expiry)
return answer('ok')
