-- The health check and the task count: forgets tasks past their time in
-- the index and returns how many remain. KEYS: 1 the task index.
return count_tasks(KEYS[1], now_ms())
