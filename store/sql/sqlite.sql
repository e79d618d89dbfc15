-- name: migration_1
-- Migrations run in order, each once (PRAGMA user_version counts them). IF NOT EXISTS: a dev
-- database made before versioning already has these tables.
CREATE TABLE IF NOT EXISTS functions (
    function_id TEXT PRIMARY KEY,
    app_id TEXT NOT NULL,
    config TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    internal_id TEXT PRIMARY KEY,
    id TEXT,
    name TEXT NOT NULL,
    data TEXT NOT NULL,
    ts INTEGER NOT NULL,
    user_data TEXT,
    v TEXT,
    target TEXT,
    received_at INTEGER NOT NULL,
    processed INTEGER NOT NULL DEFAULT 0,
    duplicate INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS events_by_name ON events (name, received_at);
CREATE INDEX IF NOT EXISTS events_unprocessed ON events (received_at) WHERE processed = 0;
CREATE TABLE IF NOT EXISTS event_keys (
    id TEXT PRIMARY KEY,
    internal_id TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    function_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    status TEXT NOT NULL,
    events TEXT NOT NULL,
    output TEXT,
    error TEXT,
    queued_at INTEGER NOT NULL,
    started_at INTEGER,
    ended_at INTEGER,
    attempt INTEGER NOT NULL DEFAULT 0,
    parent TEXT,
    UNIQUE (event_id, function_id)
);
CREATE TABLE IF NOT EXISTS steps (
    run_id TEXT NOT NULL,
    hash TEXT NOT NULL,
    name TEXT NOT NULL,
    op TEXT NOT NULL,
    status TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    output TEXT,
    error TEXT,
    started_at INTEGER,
    ended_at INTEGER,
    PRIMARY KEY (run_id, hash)
);
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    function_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL,
    lease_owner TEXT,
    lease_until INTEGER,
    published_at INTEGER NOT NULL,
    outcome TEXT,
    done_at INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_by_run ON jobs (run_id, status);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, published_at);
CREATE TABLE IF NOT EXISTS waits (
    run_id TEXT NOT NULL,
    step_hash TEXT NOT NULL,
    kind TEXT NOT NULL,
    event_name TEXT,
    if_exp TEXT,
    signal TEXT UNIQUE,
    run_event TEXT,
    PRIMARY KEY (run_id, step_hash)
);
CREATE INDEX IF NOT EXISTS waits_by_event ON waits (event_name);
CREATE TABLE IF NOT EXISTS timers (
    timer_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    run_id TEXT NOT NULL,
    step_hash TEXT NOT NULL,
    due_at INTEGER NOT NULL,
    payload TEXT NOT NULL,
    claimed_by TEXT,
    claimed_until INTEGER,
    UNIQUE (kind, run_id, step_hash)
);
CREATE INDEX IF NOT EXISTS timers_due ON timers (due_at);

-- name: ping
SELECT 1 AS ok

-- name: delete_app_functions
DELETE FROM functions WHERE app_id = :app_id

-- name: upsert_function
INSERT INTO functions (function_id, app_id, config, updated_at)
VALUES (:function_id, :app_id, :config, :now)
ON CONFLICT (function_id) DO UPDATE
SET app_id = excluded.app_id, config = excluded.config, updated_at = excluded.updated_at

-- name: select_functions
SELECT config FROM functions ORDER BY function_id

-- name: insert_event
INSERT INTO events (internal_id, id, name, data, ts, user_data, v, target, received_at)
VALUES (:internal_id, :id, :name, :data, :ts, :user_data, :v, :target, :received_at)
ON CONFLICT (internal_id) DO NOTHING

-- name: select_event_key
SELECT internal_id FROM event_keys WHERE id = :id AND expires_at > :now

-- name: upsert_event_key
INSERT INTO event_keys (id, internal_id, expires_at) VALUES (:id, :internal_id, :expires_at)
ON CONFLICT (id) DO UPDATE SET internal_id = excluded.internal_id, expires_at = excluded.expires_at

-- name: mark_event_duplicate
UPDATE events SET duplicate = 1 WHERE internal_id = :internal_id

-- name: select_unprocessed_events
SELECT * FROM events WHERE processed = 0 AND received_at < :before ORDER BY received_at LIMIT :limit

-- name: select_events
SELECT * FROM events ORDER BY received_at DESC, internal_id DESC LIMIT :limit

-- name: select_events_named
SELECT * FROM events WHERE name = :name ORDER BY received_at DESC, internal_id DESC LIMIT :limit

-- name: select_waits_for_event
SELECT * FROM waits WHERE kind = 'event' AND event_name = :event_name

-- name: insert_runs
-- Run once per item (see `Tx.fetch_each`); see postgres.sql.
INSERT INTO runs (run_id, function_id, app_id, event_id, status, events, queued_at, parent,
                  slot_key_1, slot_limit_1, slot_key_2, slot_limit_2, order_at)
VALUES (:run_id, :function_id, :app_id, :event_id, 'Queued', :events, :now, :parent,
        :slot_key_1, :slot_limit_1, :slot_key_2, :slot_limit_2, :now - :priority_ms)
ON CONFLICT DO NOTHING;
-- changes(): the rows the insert above made, so a run that existed gets no second job.
INSERT INTO jobs (job_id, run_id, function_id, app_id, attempt, status, published_at,
                  slot_key_1, slot_limit_1, slot_key_2, slot_limit_2, order_at)
SELECT :job_id, :run_id, :function_id, :app_id, 0,
       CASE WHEN :slot_key_1 IS NULL THEN 'queued' ELSE 'pending' END, :now,
       :slot_key_1, :slot_limit_1, :slot_key_2, :slot_limit_2, :now - :priority_ms
WHERE changes() = 1
RETURNING job_id, run_id, function_id, app_id, attempt, status, slot_key_1, slot_key_2

-- name: insert_job_if_idle
INSERT INTO jobs (job_id, run_id, function_id, app_id, attempt, status, published_at,
                  slot_key_1, slot_limit_1, slot_key_2, slot_limit_2, order_at)
SELECT :job_id, run_id, function_id, app_id, :attempt,
       CASE WHEN slot_key_1 IS NULL THEN 'queued' ELSE 'pending' END, :now,
       slot_key_1, slot_limit_1, slot_key_2, slot_limit_2, order_at
FROM runs
WHERE run_id = :run_id AND status IN ('Queued', 'Running')
  AND NOT EXISTS (SELECT 1 FROM jobs WHERE run_id = :run_id AND status IN ('pending', 'queued'))
RETURNING job_id, run_id, function_id, app_id, attempt, status, slot_key_1, slot_key_2

-- name: claim_jobs
-- Run once per item (see `Tx.fetch_each`).
UPDATE jobs SET status = 'leased', lease_owner = :owner, lease_until = :lease_until
WHERE job_id = :job_id
  AND (status = 'queued' OR (status = 'leased' AND lease_until < :now));
UPDATE runs SET status = 'Running', started_at = COALESCE(started_at, :now)
WHERE status = 'Queued' AND run_id = (
    SELECT run_id FROM jobs
    WHERE job_id = :job_id AND status = 'leased' AND lease_owner = :owner AND lease_until = :lease_until
);
SELECT jobs.job_id, jobs.attempt AS job_attempt,
       EXISTS (SELECT 1 FROM steps WHERE steps.run_id = runs.run_id) AS has_steps, runs.*
FROM jobs JOIN runs ON runs.run_id = jobs.run_id
WHERE jobs.job_id = :job_id AND jobs.status = 'leased'
  AND jobs.lease_owner = :owner AND jobs.lease_until = :lease_until

-- name: delete_jobs
-- Run once per item (see `Tx.fetch_each`).
DELETE FROM jobs WHERE job_id = :job_id

-- name: select_steps_of_runs
SELECT * FROM steps WHERE run_id IN (SELECT value FROM json_each(:run_ids)) ORDER BY rowid

-- name: delete_job
DELETE FROM jobs WHERE job_id = :job_id

-- name: select_run
SELECT * FROM runs WHERE run_id = :run_id

-- name: select_runs_for_event
SELECT * FROM runs WHERE event_id = :event_id ORDER BY queued_at, run_id

-- name: select_steps
SELECT * FROM steps WHERE run_id = :run_id ORDER BY rowid

-- name: renew_lease
UPDATE jobs SET lease_until = :lease_until
WHERE job_id = :job_id AND status = 'leased' AND lease_owner = :owner

-- name: write_jobs
-- Run once per item (see `Tx.fetch_each`), answering the job's id.
-- What a job has done, only if `owner` still holds its lease (a cancelled run has no jobs left):
-- its finished steps, the events they sent, and, when the job ends (`finish`), its outcome. A
-- write while it goes on (a checkpoint) extends the lease. A step already Completed or Failed
-- keeps its first result.
UPDATE jobs SET
    lease_until = MAX(lease_until, :lease_until),
    status = CASE WHEN :finish THEN 'done' ELSE status END,
    outcome = CASE WHEN :finish THEN :outcome ELSE outcome END,
    done_at = CASE WHEN :finish THEN :now ELSE done_at END
WHERE job_id = :job_id AND status = 'leased' AND lease_owner = :owner
RETURNING job_id;
INSERT INTO steps (run_id, hash, name, op, status, attempt, output, error, started_at, ended_at,
                   input)
SELECT (SELECT run_id FROM jobs WHERE job_id = :job_id),
       value ->> 'hash', value ->> 'name', value ->> 'op', value ->> 'status', value ->> 'attempt',
       value ->> 'output', value ->> 'error', value ->> 'started_at', value ->> 'ended_at',
       value ->> 'input'
FROM json_each(:steps) WHERE EXISTS (
    SELECT 1 FROM jobs WHERE job_id = :job_id AND lease_owner = :owner
      AND status = CASE WHEN :finish THEN 'done' ELSE 'leased' END
)
ORDER BY key
ON CONFLICT (run_id, hash) DO UPDATE
SET status = excluded.status, attempt = excluded.attempt, output = excluded.output,
    error = excluded.error, started_at = COALESCE(steps.started_at, excluded.started_at),
    ended_at = excluded.ended_at, input = COALESCE(excluded.input, steps.input)
WHERE steps.status NOT IN ('Completed', 'Failed');
INSERT INTO events (internal_id, id, name, data, ts, user_data, v, target, received_at)
SELECT value ->> 'internal_id', value ->> 'id', value ->> 'name', value ->> 'data', value ->> 'ts',
       value ->> 'user_data', value ->> 'v', value ->> 'target', value ->> 'received_at'
FROM json_each(:events) WHERE EXISTS (
    SELECT 1 FROM jobs WHERE job_id = :job_id AND lease_owner = :owner
      AND status = CASE WHEN :finish THEN 'done' ELSE 'leased' END
)
ON CONFLICT (internal_id) DO NOTHING

-- name: lock_runs
-- SQLite serialises writers, so this only reads the statuses; PostgreSQL locks the rows here.
SELECT run_id, status FROM runs WHERE run_id IN (SELECT value FROM json_each(:run_ids))

-- name: select_signal_wait
SELECT run_id, step_hash FROM waits WHERE kind = 'signal' AND signal = :signal

-- name: record_failed_attempt
INSERT INTO steps (run_id, hash, name, op, status, attempt, output, error, started_at, ended_at)
VALUES (:run_id, :hash, :name, :op, :status, :attempt, :output, :error, :started_at, :ended_at)
ON CONFLICT (run_id, hash) DO UPDATE
SET attempt = excluded.attempt, error = excluded.error, status = excluded.status
WHERE steps.status NOT IN ('Completed', 'Failed') AND steps.attempt < excluded.attempt

-- name: insert_step_if_absent
INSERT INTO steps (run_id, hash, name, op, status, attempt, output, error, started_at, ended_at,
                   input)
VALUES (:run_id, :hash, :name, :op, :status, :attempt, :output, :error, :started_at, :ended_at,
        :input)
ON CONFLICT (run_id, hash) DO NOTHING

-- name: insert_waiting_step
-- See postgres.sql.
INSERT INTO steps (run_id, hash, name, op, status, attempt, output, error, started_at, ended_at,
                   input)
VALUES (:run_id, :hash, :name, :op, :status, :attempt, :output, :error, :started_at, :ended_at,
        :input)
ON CONFLICT (run_id, hash) DO UPDATE SET status = excluded.status, input = excluded.input
WHERE steps.status = 'Running'

-- name: complete_waiting_step
UPDATE steps SET status = :status, output = :output, error = :error, ended_at = :now
WHERE run_id = :run_id AND hash = :hash AND status = 'Waiting'

-- name: insert_wait
INSERT INTO waits (run_id, step_hash, kind, event_name, if_exp, signal, run_event, match_path,
                   match_key, expires_at)
VALUES (:run_id, :step_hash, :kind, :event_name, :if_exp, :signal, :run_event, :match_path,
        :match_key, :expires_at)
ON CONFLICT DO NOTHING

-- name: delete_wait
DELETE FROM waits WHERE run_id = :run_id AND step_hash = :step_hash RETURNING kind

-- name: delete_signal_wait
DELETE FROM waits WHERE kind = 'signal' AND signal = :signal RETURNING run_id, step_hash

-- name: insert_timer
INSERT INTO timers (timer_id, kind, run_id, step_hash, due_at, payload)
VALUES (:timer_id, :kind, :run_id, :step_hash, :due_at, :payload)
ON CONFLICT DO NOTHING

-- name: delete_step_timers
DELETE FROM timers WHERE run_id = :run_id AND step_hash = :step_hash AND kind IN ('wait', 'sleep')

-- name: set_run_attempt
UPDATE runs SET attempt = :attempt WHERE run_id = :run_id AND attempt < :attempt

-- name: finish_run
UPDATE runs SET status = :status, output = :output, error = :error, ended_at = :now
WHERE run_id = :run_id AND status NOT IN ('Completed', 'Failed', 'Cancelled')
RETURNING function_id, app_id, parent, slot_key_1, slot_key_2;
-- An ended run keeps no waits, timers (cron ticks belong to the function) or jobs (a job in a
-- worker's hands loses its lease, so its late result is dropped); for a run that had ended
-- already, these find nothing.
DELETE FROM waits WHERE run_id = :run_id;
DELETE FROM timers WHERE run_id = :run_id AND kind <> 'cron';
DELETE FROM jobs WHERE run_id = :run_id

-- name: finish_runs
-- Run once per item (see `Tx.fetch_each`): `finish_run`, answering the run's id.
UPDATE runs SET status = :status, output = :output, error = :error, ended_at = :now
WHERE run_id = :run_id AND status NOT IN ('Completed', 'Failed', 'Cancelled')
RETURNING run_id, function_id, app_id, parent, slot_key_1, slot_key_2;
DELETE FROM waits WHERE run_id = :run_id;
DELETE FROM timers WHERE run_id = :run_id AND kind <> 'cron';
DELETE FROM jobs WHERE run_id = :run_id

-- name: select_job_outcomes
SELECT jobs.job_id, jobs.outcome, jobs.attempt AS job_attempt, runs.*
FROM jobs JOIN runs ON runs.run_id = jobs.run_id
WHERE jobs.status = 'done' AND jobs.job_id IN (SELECT value FROM json_each(:job_ids))

-- name: delete_done_jobs
-- Run once per item (see `Tx.fetch_each`).
DELETE FROM jobs WHERE job_id = :job_id AND status = 'done'
RETURNING job_id, slot_key_1, slot_key_2

-- name: select_stale_outcomes
SELECT job_id FROM jobs WHERE status = 'done' AND done_at < :before ORDER BY done_at LIMIT :limit

-- name: republish_stale_jobs
UPDATE jobs SET published_at = :now
WHERE job_id IN (
    SELECT job_id FROM jobs
    WHERE (status = 'queued' AND published_at < :before)
       OR (status = 'leased' AND lease_until < :now AND published_at < :before)
    ORDER BY published_at LIMIT :limit
)
RETURNING job_id, run_id, function_id, app_id, attempt

-- name: claim_timers
UPDATE timers SET claimed_by = :owner, claimed_until = :until
WHERE timer_id IN (
    SELECT timer_id FROM timers
    WHERE due_at <= :now AND (claimed_until IS NULL OR claimed_until < :now)
    ORDER BY due_at LIMIT :limit
)
RETURNING *

-- name: delete_claimed_timer
DELETE FROM timers WHERE timer_id = :timer_id AND claimed_by = :owner

-- name: select_next_timer
SELECT MIN(due_at) AS due_at FROM timers

-- name: claim_events
-- Run once per item (see `Tx.fetch_each`); see postgres.sql.
INSERT INTO events (internal_id, id, name, data, ts, user_data, v, target, received_at, processed)
VALUES (:internal_id, :id, :name, :data, :ts, :user_data, :v, :target, :received_at, 1)
ON CONFLICT (internal_id) DO UPDATE SET processed = 1 WHERE events.processed = 0
RETURNING internal_id

-- name: insert_quiet_events
-- Run once per item (see `Tx.fetch_each`); see postgres.sql.
INSERT INTO events (internal_id, id, name, data, ts, user_data, v, target, received_at, processed)
VALUES (:internal_id, :id, :name, :data, :ts, :user_data, :v, :target, :received_at,
        NOT EXISTS (SELECT 1 FROM waits WHERE kind IN ('event', 'cancel') AND event_name = :name))
ON CONFLICT (internal_id) DO NOTHING
RETURNING internal_id, processed


-- name: migration_2
-- The dashboard's reads: runs newest first by keyset (never OFFSET), overall and per
-- function; processes that report a heartbeat.
CREATE INDEX IF NOT EXISTS runs_by_queued ON runs (queued_at, run_id);
CREATE INDEX IF NOT EXISTS runs_by_function ON runs (function_id, queued_at, run_id);
CREATE TABLE IF NOT EXISTS processes (
    process_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    app_ids TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    seen_at INTEGER NOT NULL
);

-- name: select_runs_page
-- The first condition is the index range; the second only breaks ties at its edge.
SELECT * FROM runs
WHERE queued_at <= :before_at AND (queued_at < :before_at OR run_id < :before_id)
  AND queued_at >= :from_ms AND (:status IS NULL OR status = :status)
ORDER BY queued_at DESC, run_id DESC LIMIT :limit

-- name: select_function_runs_page
SELECT * FROM runs
WHERE function_id = :function_id
  AND queued_at <= :before_at AND (queued_at < :before_at OR run_id < :before_id)
  AND queued_at >= :from_ms AND (:status IS NULL OR status = :status)
ORDER BY queued_at DESC, run_id DESC LIMIT :limit

-- name: select_event
SELECT * FROM events WHERE internal_id = :internal_id

-- name: select_event_states
SELECT internal_id, received_at, processed, duplicate FROM events
WHERE internal_id IN (SELECT value FROM json_each(:internal_ids))

-- name: select_event_run_ids
SELECT event_id, run_id FROM runs
WHERE event_id IN (SELECT value FROM json_each(:internal_ids)) ORDER BY queued_at, run_id

-- name: select_step_deadlines
SELECT step_hash, due_at FROM timers WHERE run_id = :run_id AND kind IN ('sleep', 'wait')

-- name: select_function_run_counts
SELECT function_id, status, COUNT(*) AS count FROM runs WHERE queued_at >= :since
GROUP BY function_id, status

-- name: upsert_process
INSERT INTO processes (process_id, kind, app_ids, started_at, seen_at)
VALUES (:process_id, :kind, :app_ids, :now, :now)
ON CONFLICT (process_id) DO UPDATE SET seen_at = excluded.seen_at, app_ids = excluded.app_ids;
DELETE FROM processes WHERE seen_at < :forget_before

-- name: select_processes
SELECT * FROM processes WHERE seen_at >= :seen_after ORDER BY kind, process_id

-- name: select_queued_jobs_by_app
SELECT app_id, COUNT(*) AS count FROM jobs WHERE status = 'queued' GROUP BY app_id

-- name: count_unprocessed_events
SELECT COUNT(*) AS count FROM events WHERE processed = 0


-- name: migration_3
-- The admission stage (see postgres.sql). SQLite serialises writers: no lock rows needed.
ALTER TABLE runs ADD COLUMN slot_key_1 TEXT;
ALTER TABLE runs ADD COLUMN slot_limit_1 INTEGER;
ALTER TABLE runs ADD COLUMN slot_key_2 TEXT;
ALTER TABLE runs ADD COLUMN slot_limit_2 INTEGER;
ALTER TABLE runs ADD COLUMN order_at INTEGER;
ALTER TABLE jobs ADD COLUMN slot_key_1 TEXT;
ALTER TABLE jobs ADD COLUMN slot_limit_1 INTEGER;
ALTER TABLE jobs ADD COLUMN slot_key_2 TEXT;
ALTER TABLE jobs ADD COLUMN slot_limit_2 INTEGER;
ALTER TABLE jobs ADD COLUMN order_at INTEGER;
CREATE INDEX jobs_pending_1 ON jobs (slot_key_1, order_at, job_id) WHERE status = 'pending';
CREATE INDEX jobs_pending_2 ON jobs (slot_key_2, order_at, job_id)
    WHERE status = 'pending' AND slot_key_2 IS NOT NULL;
CREATE INDEX jobs_holding_1 ON jobs (slot_key_1)
    WHERE status IN ('queued', 'leased') AND slot_key_1 IS NOT NULL;
CREATE INDEX jobs_holding_2 ON jobs (slot_key_2)
    WHERE status IN ('queued', 'leased') AND slot_key_2 IS NOT NULL

-- name: select_pending_jobs
SELECT job_id, slot_key_1, slot_limit_1, slot_key_2, slot_limit_2, order_at FROM (
    SELECT *, row_number() OVER (PARTITION BY slot_key_1 ORDER BY order_at, job_id) AS place
    FROM jobs WHERE status = 'pending' AND slot_key_1 IN (SELECT value FROM json_each(:keys))
) WHERE place <= :per_key
UNION
SELECT job_id, slot_key_1, slot_limit_1, slot_key_2, slot_limit_2, order_at FROM (
    SELECT *, row_number() OVER (PARTITION BY slot_key_2 ORDER BY order_at, job_id) AS place
    FROM jobs WHERE status = 'pending' AND slot_key_2 IN (SELECT value FROM json_each(:keys))
) WHERE place <= :per_key

-- name: count_slots_in_use
SELECT key, COUNT(*) AS used FROM (
    SELECT slot_key_1 AS key FROM jobs
    WHERE slot_key_1 IN (SELECT value FROM json_each(:keys)) AND status IN ('queued', 'leased')
    UNION ALL
    SELECT slot_key_2 AS key FROM jobs
    WHERE slot_key_2 IN (SELECT value FROM json_each(:keys)) AND status IN ('queued', 'leased')
) GROUP BY key

-- name: admit_jobs
UPDATE jobs SET status = 'queued', published_at = :now
WHERE job_id IN (SELECT value FROM json_each(:job_ids)) AND status = 'pending'
RETURNING job_id, run_id, function_id, app_id, attempt

-- name: select_pending_keys
SELECT DISTINCT slot_key_1 AS key FROM jobs WHERE status = 'pending' LIMIT :limit

-- name: migration_4
-- Gates (store/_gates.py): one state row per rule, function and key value (rate limit: the
-- GCRA's theoretical arrival time; idempotency: the key's expiry); the key a singleton run
-- holds while it has not ended; and why an event started no run.
CREATE TABLE IF NOT EXISTS gate_state (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL,
    scale INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS gate_state_by_expiry ON gate_state (expires_at);
ALTER TABLE runs ADD COLUMN singleton_key TEXT;
CREATE UNIQUE INDEX IF NOT EXISTS runs_one_per_singleton_key ON runs (singleton_key)
WHERE singleton_key IS NOT NULL AND status NOT IN ('Completed', 'Failed', 'Cancelled');
CREATE TABLE IF NOT EXISTS run_refusals (
    event_id TEXT NOT NULL,
    function_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    refused_at INTEGER NOT NULL,
    PRIMARY KEY (event_id, function_id)
);

-- name: lock_gate_state
-- SQLite serialises writers, so this only reads; a key never seen has no row.
SELECT key, value, scale, expires_at FROM gate_state
WHERE key IN (SELECT value FROM json_each(:keys))

-- name: select_gate_holders
SELECT * FROM runs
WHERE singleton_key IN (SELECT value FROM json_each(:keys))
  AND status NOT IN ('Completed', 'Failed', 'Cancelled')
ORDER BY queued_at, run_id

-- name: write_gate_state
-- WHERE true: SQLite's parser needs it between a SELECT and ON CONFLICT.
INSERT INTO gate_state (key, value, scale, expires_at)
SELECT value ->> 'key', value ->> 'value', value ->> 'scale', value ->> 'expires_at'
FROM json_each(:states) WHERE true
ON CONFLICT (key) DO UPDATE
SET value = excluded.value, scale = excluded.scale, expires_at = excluded.expires_at

-- name: hold_gate_keys
UPDATE runs SET singleton_key = (
    SELECT value ->> 'key' FROM json_each(:holds) WHERE value ->> 'run_id' = runs.run_id
)
WHERE run_id IN (SELECT value ->> 'run_id' FROM json_each(:holds))

-- name: insert_run_refusals
INSERT INTO run_refusals (event_id, function_id, reason, refused_at)
SELECT value ->> 'event_id', value ->> 'function_id', value ->> 'reason', value ->> 'at'
FROM json_each(:refusals) WHERE true
ON CONFLICT DO NOTHING

-- name: select_run_refusals
SELECT function_id, reason FROM run_refusals WHERE event_id = :event_id ORDER BY function_id

-- name: delete_expired_gate_state
DELETE FROM gate_state
WHERE key IN (
    SELECT key FROM gate_state WHERE expires_at < :now ORDER BY expires_at LIMIT :limit
)

-- name: insert_held_run
-- A run held before its first step (a throttle): no job yet; a start timer makes it.
INSERT INTO runs (run_id, function_id, app_id, event_id, status, events, queued_at, parent,
                  slot_key_1, slot_limit_1, slot_key_2, slot_limit_2, order_at)
VALUES (:run_id, :function_id, :app_id, :event_id, 'Queued', :events, :now, :parent,
        :slot_key_1, :slot_limit_1, :slot_key_2, :slot_limit_2, :now - :priority_ms)
ON CONFLICT DO NOTHING



-- name: migration_5
-- Events held before their run exists, per function and key value: a debounced burst's latest
-- event; a batch's events in arrival order. Their deadlines are timers (kinds 'debounce' and
-- 'batch', with the function id in run_id and the key value in step_hash).
CREATE TABLE IF NOT EXISTS debounces (
    function_id TEXT NOT NULL,
    hold_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    first_at INTEGER NOT NULL,
    due_at INTEGER NOT NULL,
    PRIMARY KEY (function_id, hold_key)
);
CREATE TABLE IF NOT EXISTS batches (
    function_id TEXT NOT NULL,
    hold_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    size INTEGER NOT NULL,
    first_at INTEGER NOT NULL,
    due_at INTEGER NOT NULL,
    PRIMARY KEY (function_id, hold_key)
);
CREATE TABLE IF NOT EXISTS batch_events (
    function_id TEXT NOT NULL,
    hold_key TEXT NOT NULL,
    position INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (function_id, hold_key, position)
);

-- name: lock_debounces
-- SQLite serialises writers, so this only reads the bursts; PostgreSQL locks the rows here.
SELECT d.function_id, d.hold_key, d.event_id, d.first_at, d.due_at
FROM json_each(:function_ids) AS f JOIN json_each(:keys) AS k ON k.key = f.key
JOIN debounces AS d ON d.function_id = f.value AND d.hold_key = k.value

-- name: upsert_debounces
-- `WHERE true`: SQLite needs one for an upsert from a SELECT (ON would read as a join's).
INSERT INTO debounces (function_id, hold_key, event_id, first_at, due_at)
SELECT value ->> 'function_id', value ->> 'hold_key', value ->> 'event_id',
       value ->> 'first_at', value ->> 'due_at'
FROM json_each(:bursts) WHERE true
ON CONFLICT (function_id, hold_key) DO UPDATE
SET event_id = excluded.event_id, first_at = excluded.first_at, due_at = excluded.due_at

-- name: delete_debounce
DELETE FROM debounces WHERE function_id = :function_id AND hold_key = :key

-- name: lock_batches
SELECT b.function_id, b.hold_key, b.event_id, b.size, b.first_at, b.due_at
FROM json_each(:function_ids) AS f JOIN json_each(:keys) AS k ON k.key = f.key
JOIN batches AS b ON b.function_id = f.value AND b.hold_key = k.value

-- name: add_batch_events
INSERT INTO batch_events (function_id, hold_key, position, event_id)
SELECT value ->> 'function_id', value ->> 'hold_key', value ->> 'position', value ->> 'event_id'
FROM json_each(:events) WHERE true
ON CONFLICT DO NOTHING

-- name: upsert_batches
INSERT INTO batches (function_id, hold_key, event_id, size, first_at, due_at)
SELECT value ->> 'function_id', value ->> 'hold_key', value ->> 'event_id', value ->> 'size',
       value ->> 'first_at', value ->> 'due_at'
FROM json_each(:batches) WHERE true
ON CONFLICT (function_id, hold_key) DO UPDATE
SET event_id = excluded.event_id, size = excluded.size, first_at = excluded.first_at,
    due_at = excluded.due_at

-- name: select_batch_events
SELECT events.* FROM batch_events JOIN events ON events.internal_id = batch_events.event_id
WHERE batch_events.function_id = :function_id AND batch_events.hold_key = :key
ORDER BY batch_events.position

-- name: delete_batch
DELETE FROM batch_events WHERE function_id = :function_id AND hold_key = :key;
DELETE FROM timers WHERE kind = 'batch' AND run_id = :function_id AND step_hash = :key;
DELETE FROM batches WHERE function_id = :function_id AND hold_key = :key

-- name: arm_hold_timers
INSERT INTO timers (timer_id, kind, run_id, step_hash, due_at, payload)
SELECT value ->> 'timer_id', value ->> 'kind', value ->> 'function_id', value ->> 'hold_key',
       value ->> 'due_at', '{}'
FROM json_each(:timers) WHERE true
ON CONFLICT (kind, run_id, step_hash) DO UPDATE
SET timer_id = excluded.timer_id, due_at = excluded.due_at, claimed_by = NULL,
    claimed_until = NULL


-- name: count_pending_jobs_by_function
-- Jobs waiting for admission (the flow-control metrics' gauge), one grouped read.
SELECT function_id, COUNT(*) AS count FROM jobs WHERE status = 'pending' GROUP BY function_id

-- name: select_run_hold
-- Why flow control holds a run: its job waits for a slot, or its start timer (a throttle).
SELECT 'concurrency' AS rule, published_at AS at FROM jobs
WHERE run_id = :run_id AND status = 'pending'
UNION ALL
SELECT 'throttle' AS rule, due_at AS at FROM timers WHERE kind = 'start' AND run_id = :run_id

-- name: select_runs_listing_event
-- Runs that a debounced or batched event was merged into (the dashboard's event page).
SELECT function_id, run_id FROM runs
WHERE function_id IN (SELECT value FROM json_each(:function_ids)) AND queued_at >= :since
  AND instr(events, :needle) > 0
ORDER BY queued_at

-- name: select_first_runs_since
SELECT * FROM runs WHERE function_id = :function_id AND queued_at >= :since
ORDER BY queued_at, run_id LIMIT :limit

-- name: count_slots_in_use_by_function
-- Slots held (admitted jobs of concurrency-limited functions), per function: a gauge, sampled.
SELECT function_id, COUNT(*) AS count FROM jobs
WHERE slot_key_1 IS NOT NULL AND status IN ('queued', 'leased') GROUP BY function_id



-- name: migration_7
-- Bulk cancellations asked through the API (see postgres.sql).
CREATE TABLE IF NOT EXISTS cancellations (
    cancellation_id TEXT PRIMARY KEY,
    function_id TEXT NOT NULL,
    started_after INTEGER NOT NULL,
    started_before INTEGER NOT NULL,
    if_exp TEXT,
    status TEXT NOT NULL,
    cancelled INTEGER NOT NULL DEFAULT 0,
    cursor_at INTEGER NOT NULL,
    cursor_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    ended_at INTEGER
);

-- name: insert_cancellation
INSERT INTO cancellations (cancellation_id, function_id, started_after, started_before, if_exp,
                           status, cancelled, cursor_at, cursor_id, created_at)
VALUES (:cancellation_id, :function_id, :started_after, :started_before, :if_exp, :status, 0,
        :cursor_at, :cursor_id, :created_at)

-- name: select_cancellation
SELECT * FROM cancellations WHERE cancellation_id = :cancellation_id

-- name: select_cancellation_runs
-- The next runs of the range after the cursor, ended or not (the caller skips ended ones).
SELECT * FROM runs
WHERE function_id = :function_id
  AND (queued_at, run_id) > (:after_at, :after_id)
  AND queued_at < :before_at
ORDER BY queued_at, run_id LIMIT :limit

-- name: advance_cancellation
UPDATE cancellations
SET cursor_at = :cursor_at, cursor_id = :cursor_id, cancelled = cancelled + :count,
    status = :status, ended_at = CASE WHEN :status = 'Completed' THEN :now END
WHERE cancellation_id = :cancellation_id



-- name: migration_6
-- As in postgres.sql: waits and cancel listeners indexed by (event name, path, key).
ALTER TABLE waits ADD COLUMN match_path TEXT;
ALTER TABLE waits ADD COLUMN match_key TEXT;
ALTER TABLE waits ADD COLUMN expires_at INTEGER;
CREATE INDEX waits_by_match ON waits (event_name, match_path, match_key);
-- Its prefix serves every lookup by event name: the older index would only cost writes.
DROP INDEX waits_by_event;

-- name: insert_listeners
-- `WHERE true`: SQLite needs one for an upsert from a SELECT (ON would read as a join's).
INSERT INTO waits (run_id, step_hash, kind, event_name, if_exp, run_event, match_path, match_key,
                   expires_at)
SELECT value ->> 'run_id', value ->> 'step_hash', 'cancel', value ->> 'event_name',
       value ->> 'if_exp', value ->> 'run_event', value ->> 'match_path', value ->> 'match_key',
       value ->> 'expires_at'
FROM json_each(:listeners) WHERE true
ON CONFLICT DO NOTHING

-- name: select_match_paths
-- A loose index scan, as in postgres.sql.
WITH RECURSIVE paths (event_name, match_path, has_unindexed) AS (
    SELECT n.value, (SELECT w.match_path FROM waits w
               WHERE w.event_name = n.value AND w.match_path IS NOT NULL
               ORDER BY w.match_path LIMIT 1),
           EXISTS (SELECT 1 FROM waits w WHERE w.event_name = n.value AND w.match_path IS NULL)
    FROM json_each(:names) AS n
    UNION ALL
    SELECT p.event_name, (SELECT w.match_path FROM waits w
                          WHERE w.event_name = p.event_name AND w.match_path > p.match_path
                          ORDER BY w.match_path LIMIT 1), 0
    FROM paths p WHERE p.match_path IS NOT NULL
)
SELECT event_name, match_path, has_unindexed FROM paths
WHERE match_path IS NOT NULL OR has_unindexed

-- name: select_wait_candidates
-- As in postgres.sql; CROSS JOIN keeps the keys as the outer loop (one index probe each).
WITH wanted AS (
    SELECT DISTINCT value ->> 'event_name' AS event_name, value ->> 'match_path' AS match_path,
           value ->> 'match_key' AS match_key
    FROM json_each(:keys)
), found AS (
    SELECT w.* FROM wanted k
    CROSS JOIN waits w ON w.event_name = k.event_name AND w.match_path = k.match_path
                      AND w.match_key = k.match_key
    UNION ALL
    SELECT w.* FROM waits w
    WHERE w.event_name IN (SELECT value FROM json_each(:names)) AND w.match_path IS NULL
)
SELECT f.run_id, f.step_hash, f.kind, f.event_name, f.if_exp, f.signal, f.run_event,
       f.match_path, f.match_key, f.expires_at, r.function_id, r.app_id, r.event_id, r.status,
       r.events, r.queued_at, r.output, r.error, r.started_at, r.ended_at, r.attempt, r.parent
FROM found f JOIN runs r ON r.run_id = f.run_id
WHERE f.kind IN ('event', 'cancel') AND (f.expires_at IS NULL OR f.expires_at > :now)
  AND r.status NOT IN ('Completed', 'Failed', 'Cancelled')

-- name: migration_8
-- A run's timers by run (see postgres.sql).
CREATE INDEX IF NOT EXISTS timers_by_run ON timers (run_id)

-- name: migration_9
-- Retention (see postgres.sql).
CREATE INDEX IF NOT EXISTS runs_by_end ON runs (ended_at, run_id)
WHERE status IN ('Completed', 'Failed', 'Cancelled');
CREATE INDEX IF NOT EXISTS batch_events_by_event ON batch_events (event_id);
CREATE INDEX IF NOT EXISTS debounces_by_event ON debounces (event_id)

-- name: forget_runs
-- One batch of finished runs past retention, and everything keyed by them. Every statement
-- picks the same runs: the transaction holds the write lock, and the runs go last.
DELETE FROM steps WHERE run_id IN (
    SELECT run_id FROM runs
    WHERE status IN ('Completed', 'Failed', 'Cancelled') AND ended_at < :before
    ORDER BY ended_at, run_id LIMIT :limit
);
DELETE FROM jobs WHERE run_id IN (
    SELECT run_id FROM runs
    WHERE status IN ('Completed', 'Failed', 'Cancelled') AND ended_at < :before
    ORDER BY ended_at, run_id LIMIT :limit
);
DELETE FROM timers WHERE run_id IN (
    SELECT run_id FROM runs
    WHERE status IN ('Completed', 'Failed', 'Cancelled') AND ended_at < :before
    ORDER BY ended_at, run_id LIMIT :limit
);
DELETE FROM waits WHERE run_id IN (
    SELECT run_id FROM runs
    WHERE status IN ('Completed', 'Failed', 'Cancelled') AND ended_at < :before
    ORDER BY ended_at, run_id LIMIT :limit
);
DELETE FROM runs WHERE run_id IN (
    SELECT run_id FROM runs
    WHERE status IN ('Completed', 'Failed', 'Cancelled') AND ended_at < :before
    ORDER BY ended_at, run_id LIMIT :limit
)

-- name: forget_events
-- One batch of processed events past retention that no kept run started and no hold keeps;
-- the refusals go first, while the events that pick them are still there.
DELETE FROM run_refusals WHERE event_id IN (
    SELECT internal_id FROM events AS e
    WHERE e.received_at < :before AND e.processed = 1
      AND NOT EXISTS (SELECT 1 FROM runs WHERE runs.event_id = e.internal_id)
      AND NOT EXISTS (SELECT 1 FROM batch_events AS b WHERE b.event_id = e.internal_id)
      AND NOT EXISTS (SELECT 1 FROM debounces AS d WHERE d.event_id = e.internal_id)
    ORDER BY e.received_at, e.internal_id LIMIT :limit
);
DELETE FROM events WHERE internal_id IN (
    SELECT internal_id FROM events AS e
    WHERE e.received_at < :before AND e.processed = 1
      AND NOT EXISTS (SELECT 1 FROM runs WHERE runs.event_id = e.internal_id)
      AND NOT EXISTS (SELECT 1 FROM batch_events AS b WHERE b.event_id = e.internal_id)
      AND NOT EXISTS (SELECT 1 FROM debounces AS d WHERE d.event_id = e.internal_id)
    ORDER BY e.received_at, e.internal_id LIMIT :limit
)

-- name: migration_10
-- What a step was asked to do (see postgres.sql).
ALTER TABLE steps ADD COLUMN input TEXT;
