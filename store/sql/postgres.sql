-- The PostgreSQL twin of sqlite.sql: the same query names with the same meaning, made safe for
-- several scheduler and worker processes at once (row locks, SKIP LOCKED, unique constraints).
-- JSON columns are TEXT because the shared verbs encode and decode JSON themselves.

-- name: lock_schema
-- One constant key ('tidef' in ASCII) serialises concurrent migrations until commit.
SELECT pg_advisory_xact_lock(500085925222)

-- name: create_schema_table
CREATE TABLE IF NOT EXISTS tideflow_schema (
    version INTEGER PRIMARY KEY,
    applied_at BIGINT NOT NULL
)

-- name: select_schema_versions
SELECT version FROM tideflow_schema

-- name: insert_schema_version
INSERT INTO tideflow_schema (version, applied_at)
VALUES (%(version)s, (extract(epoch FROM clock_timestamp()) * 1000)::bigint)

-- name: migration_1
CREATE TABLE functions (
    function_id TEXT PRIMARY KEY,
    app_id TEXT NOT NULL,
    config TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE events (
    internal_id TEXT PRIMARY KEY,
    id TEXT,
    name TEXT NOT NULL,
    data TEXT NOT NULL,
    ts BIGINT NOT NULL,
    user_data TEXT,
    v TEXT,
    target TEXT,
    received_at BIGINT NOT NULL,
    processed INTEGER NOT NULL DEFAULT 0,
    duplicate INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX events_by_name ON events (name, received_at);
CREATE INDEX events_by_received ON events (received_at);
CREATE INDEX events_unprocessed ON events (received_at) WHERE processed = 0;
CREATE TABLE event_keys (
    id TEXT PRIMARY KEY,
    internal_id TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY,
    function_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    status TEXT NOT NULL,
    events TEXT NOT NULL,
    output TEXT,
    error TEXT,
    queued_at BIGINT NOT NULL,
    started_at BIGINT,
    ended_at BIGINT,
    attempt INTEGER NOT NULL DEFAULT 0,
    parent TEXT,
    UNIQUE (event_id, function_id)
);
CREATE TABLE steps (
    run_id TEXT NOT NULL,
    hash TEXT NOT NULL,
    -- Insertion order, which SQLite gets from rowid: a run's steps are listed in it.
    seq BIGINT GENERATED ALWAYS AS IDENTITY,
    name TEXT NOT NULL,
    op TEXT NOT NULL,
    status TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    output TEXT,
    error TEXT,
    started_at BIGINT,
    ended_at BIGINT,
    PRIMARY KEY (run_id, hash)
);
CREATE TABLE jobs (
    job_id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    function_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL,
    lease_owner TEXT,
    lease_until BIGINT,
    published_at BIGINT NOT NULL,
    outcome TEXT,
    done_at BIGINT
);
CREATE INDEX jobs_by_run ON jobs (run_id, status);
CREATE INDEX jobs_by_status ON jobs (status, published_at);
-- At most one queued job per run: under concurrent dispatches the NOT EXISTS guard of
-- insert_job_if_idle cannot see another transaction's uncommitted job, this index can.
CREATE UNIQUE INDEX jobs_one_queued_per_run ON jobs (run_id) WHERE status = 'queued';
CREATE TABLE waits (
    run_id TEXT NOT NULL,
    step_hash TEXT NOT NULL,
    kind TEXT NOT NULL,
    event_name TEXT,
    if_exp TEXT,
    signal TEXT UNIQUE,
    run_event TEXT,
    PRIMARY KEY (run_id, step_hash)
);
CREATE INDEX waits_by_event ON waits (event_name);
CREATE TABLE timers (
    timer_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    run_id TEXT NOT NULL,
    step_hash TEXT NOT NULL,
    due_at BIGINT NOT NULL,
    payload TEXT NOT NULL,
    claimed_by TEXT,
    claimed_until BIGINT,
    UNIQUE (kind, run_id, step_hash)
);
CREATE INDEX timers_due ON timers (due_at);

-- name: ping
SELECT 1 AS ok

-- name: delete_app_functions
DELETE FROM functions WHERE app_id = %(app_id)s

-- name: upsert_function
INSERT INTO functions (function_id, app_id, config, updated_at)
VALUES (%(function_id)s, %(app_id)s, %(config)s, %(now)s)
ON CONFLICT (function_id) DO UPDATE
SET app_id = excluded.app_id, config = excluded.config, updated_at = excluded.updated_at

-- name: select_functions
SELECT config FROM functions ORDER BY function_id

-- name: insert_event
INSERT INTO events (internal_id, id, name, data, ts, user_data, v, target, received_at)
VALUES (%(internal_id)s, %(id)s, %(name)s, %(data)s, %(ts)s, %(user_data)s, %(v)s, %(target)s,
        %(received_at)s)
ON CONFLICT (internal_id) DO NOTHING

-- name: select_event_key
-- A plain SELECT would let two schedulers, processing two events with the same id at once,
-- both find the id unseen. Upserting an expired placeholder locks the key's row instead (the
-- second waits for the first to commit and then reads its key); upsert_event_key overwrites
-- the placeholder when the event is not a duplicate.
WITH key AS (
    INSERT INTO event_keys (id, internal_id, expires_at) VALUES (%(id)s, '', 0)
    ON CONFLICT (id) DO UPDATE SET expires_at = event_keys.expires_at
    RETURNING internal_id, expires_at
)
SELECT internal_id FROM key WHERE expires_at > %(now)s

-- name: upsert_event_key
INSERT INTO event_keys (id, internal_id, expires_at)
VALUES (%(id)s, %(internal_id)s, %(expires_at)s)
ON CONFLICT (id) DO UPDATE SET internal_id = excluded.internal_id, expires_at = excluded.expires_at

-- name: mark_event_duplicate
UPDATE events SET duplicate = 1 WHERE internal_id = %(internal_id)s

-- name: select_unprocessed_events
SELECT * FROM events WHERE processed = 0 AND received_at < %(before)s
ORDER BY received_at LIMIT %(limit)s

-- name: select_events
SELECT * FROM events ORDER BY received_at DESC, internal_id DESC LIMIT %(limit)s

-- name: select_events_named
SELECT * FROM events WHERE name = %(name)s
ORDER BY received_at DESC, internal_id DESC LIMIT %(limit)s

-- name: select_waits_for_event
SELECT * FROM waits WHERE kind = 'event' AND event_name = %(event_name)s

-- name: insert_runs
-- New runs, each with its first job in the same statement; a run that existed gets none. A
-- job is 'pending' when the run has concurrency pools (it waits for admission).
-- In the changes' order: of two runs for one (event, function), the first is made.
WITH input AS (
    SELECT * FROM ROWS FROM (json_to_recordset(%(items)s::json)
        AS (run_id text, function_id text, app_id text, event_id text, events text,
            parent text, now bigint, slot_key_1 text, slot_limit_1 int, slot_key_2 text,
            slot_limit_2 int, priority_ms bigint, job_id text)) WITH ORDINALITY AS r
), run AS (
    INSERT INTO runs (run_id, function_id, app_id, event_id, status, events, queued_at, parent,
                      slot_key_1, slot_limit_1, slot_key_2, slot_limit_2, order_at)
    SELECT run_id, function_id, app_id, event_id, 'Queued', events, now, parent,
           slot_key_1, slot_limit_1, slot_key_2, slot_limit_2, now - priority_ms
    FROM input ORDER BY ordinality
    ON CONFLICT DO NOTHING
    RETURNING run_id, function_id, app_id, slot_key_1, slot_limit_1, slot_key_2, slot_limit_2,
              order_at, queued_at
)
INSERT INTO jobs (job_id, run_id, function_id, app_id, attempt, status, published_at,
                  slot_key_1, slot_limit_1, slot_key_2, slot_limit_2, order_at)
SELECT input.job_id, run.run_id, run.function_id, run.app_id, 0,
       CASE WHEN run.slot_key_1 IS NULL THEN 'queued' ELSE 'pending' END, run.queued_at,
       run.slot_key_1, run.slot_limit_1, run.slot_key_2, run.slot_limit_2, run.order_at
FROM run JOIN input ON input.run_id = run.run_id
RETURNING job_id, run_id, function_id, app_id, attempt, status, slot_key_1, slot_key_2

-- name: insert_job_if_idle
-- ON CONFLICT (with jobs_one_queued_per_run) covers a concurrent dispatch of the same run.
INSERT INTO jobs (job_id, run_id, function_id, app_id, attempt, status, published_at,
                  slot_key_1, slot_limit_1, slot_key_2, slot_limit_2, order_at)
SELECT %(job_id)s, run_id, function_id, app_id, %(attempt)s,
       CASE WHEN slot_key_1 IS NULL THEN 'queued' ELSE 'pending' END, %(now)s,
       slot_key_1, slot_limit_1, slot_key_2, slot_limit_2, order_at
FROM runs
WHERE run_id = %(run_id)s AND status IN ('Queued', 'Running')
  AND NOT EXISTS (
      SELECT 1 FROM jobs WHERE run_id = %(run_id)s AND status IN ('pending', 'queued'))
ON CONFLICT DO NOTHING
RETURNING job_id, run_id, function_id, app_id, attempt, status, slot_key_1, slot_key_2

-- name: claim_jobs
-- Locks the runs first (the lock order, sorted), then leases the jobs. A concurrent claim waits
-- on the locks, then re-checks the condition on the new version. The main query sees the runs
-- as they were before `started`, hence the CASEs.
WITH wanted AS (
    SELECT j.job_id FROM json_to_recordset(%(items)s::json) AS j(job_id text)
), locked AS (
    SELECT runs.run_id FROM runs JOIN jobs ON jobs.run_id = runs.run_id
    WHERE jobs.job_id IN (SELECT job_id FROM wanted)
    ORDER BY runs.run_id
    FOR UPDATE OF runs
), claimed AS (
    UPDATE jobs SET status = 'leased', lease_owner = %(owner)s, lease_until = %(lease_until)s
    WHERE job_id IN (SELECT job_id FROM wanted) AND run_id IN (SELECT run_id FROM locked)
      AND (status = 'queued' OR (status = 'leased' AND lease_until < %(now)s))
    RETURNING job_id, run_id, attempt
), started AS (
    UPDATE runs SET status = 'Running', started_at = COALESCE(started_at, %(now)s)
    WHERE run_id IN (SELECT run_id FROM claimed) AND status = 'Queued'
)
SELECT claimed.job_id, claimed.attempt AS job_attempt, runs.run_id, runs.function_id,
    runs.app_id, runs.event_id,
    CASE WHEN runs.status = 'Queued' THEN 'Running' ELSE runs.status END AS status,
    runs.events, runs.queued_at, runs.output, runs.error,
    CASE WHEN runs.status = 'Queued' THEN COALESCE(runs.started_at, %(now)s) ELSE runs.started_at END AS started_at,
    runs.ended_at, runs.attempt, runs.parent,
    EXISTS (SELECT 1 FROM steps WHERE steps.run_id = runs.run_id) AS has_steps
FROM claimed JOIN runs ON runs.run_id = claimed.run_id

-- name: delete_jobs
DELETE FROM jobs
WHERE job_id IN (SELECT j.job_id FROM json_to_recordset(%(items)s::json) AS j(job_id text))

-- name: select_steps_of_runs
SELECT * FROM steps WHERE run_id = ANY(%(run_ids)s) ORDER BY seq

-- name: delete_job
DELETE FROM jobs WHERE job_id = %(job_id)s

-- name: select_run
SELECT * FROM runs WHERE run_id = %(run_id)s

-- name: select_runs_for_event
SELECT * FROM runs WHERE event_id = %(event_id)s ORDER BY queued_at, run_id

-- name: select_steps
SELECT * FROM steps WHERE run_id = %(run_id)s ORDER BY seq

-- name: renew_lease
UPDATE jobs SET lease_until = %(lease_until)s
WHERE job_id = %(job_id)s AND status = 'leased' AND lease_owner = %(owner)s

-- name: write_jobs
-- What jobs have done, each only if `owner` still holds its lease (a cancelled run has no jobs
-- left): its finished steps, the events they sent, and, when it ends (`finish`), its outcome;
-- a write while it goes on (a checkpoint) extends the lease. A step already Completed or Failed
-- keeps its first result. For distinct jobs of distinct runs; answers the jobs still held.
WITH input AS (
    SELECT * FROM json_to_recordset(%(items)s::json)
        AS j(job_id text, steps text, events text, finish boolean, outcome text, now bigint,
             lease_until bigint)
), held AS (
    UPDATE jobs SET
        lease_until = GREATEST(jobs.lease_until, input.lease_until),
        status = CASE WHEN input.finish THEN 'done' ELSE jobs.status END,
        outcome = CASE WHEN input.finish THEN input.outcome ELSE jobs.outcome END,
        done_at = CASE WHEN input.finish THEN input.now ELSE jobs.done_at END
    FROM input
    WHERE jobs.job_id = input.job_id AND jobs.status = 'leased' AND jobs.lease_owner = %(owner)s
    RETURNING jobs.job_id, jobs.run_id
), recorded AS (
    INSERT INTO steps (run_id, hash, name, op, status, attempt, output, error, started_at, ended_at,
                       input)
    SELECT held.run_id, s.hash, s.name, s.op, s.status, s.attempt, s.output, s.error,
           s.started_at, s.ended_at, s.input
    FROM held JOIN input ON input.job_id = held.job_id,
        ROWS FROM (json_to_recordset(input.steps::json)
        AS (hash text, name text, op text, status text, attempt int, output text, error text,
            started_at bigint, ended_at bigint, input text)) WITH ORDINALITY AS s
    ORDER BY held.run_id, s.ordinality
    ON CONFLICT (run_id, hash) DO UPDATE
    SET status = excluded.status, attempt = excluded.attempt, output = excluded.output,
        error = excluded.error, started_at = COALESCE(steps.started_at, excluded.started_at),
        ended_at = excluded.ended_at, input = COALESCE(excluded.input, steps.input)
    WHERE steps.status NOT IN ('Completed', 'Failed')
), sent AS (
    INSERT INTO events (internal_id, id, name, data, ts, user_data, v, target, received_at)
    SELECT e.internal_id, e.id, e.name, e.data, e.ts, e.user_data, e.v, e.target, e.received_at
    FROM held JOIN input ON input.job_id = held.job_id,
        json_to_recordset(input.events::json)
        AS e(internal_id text, id text, name text, data text, ts bigint, user_data text, v text,
             target text, received_at bigint)
    ON CONFLICT (internal_id) DO NOTHING
)
SELECT job_id FROM held

-- name: lock_runs
-- Lock order (see store/_sql.py): a transaction that changes runs locks their rows first, all at
-- once and sorted, before any step, wait, timer, job or event row.
SELECT run_id, status FROM runs WHERE run_id = ANY(%(run_ids)s) ORDER BY run_id FOR UPDATE

-- name: lock_event_keys
-- Event keys next, sorted: two replicas deduplicating overlapping ids lock them in one order.
INSERT INTO event_keys (id, internal_id, expires_at)
SELECT key, '', 0 FROM unnest(%(ids)s::text[]) AS key ORDER BY key
ON CONFLICT (id) DO UPDATE SET expires_at = event_keys.expires_at

-- name: select_signal_wait
SELECT run_id, step_hash FROM waits WHERE kind = 'signal' AND signal = %(signal)s

-- name: record_failed_attempt
INSERT INTO steps (run_id, hash, name, op, status, attempt, output, error, started_at, ended_at)
VALUES (%(run_id)s, %(hash)s, %(name)s, %(op)s, %(status)s, %(attempt)s, %(output)s, %(error)s,
        %(started_at)s, %(ended_at)s)
ON CONFLICT (run_id, hash) DO UPDATE
SET attempt = excluded.attempt, error = excluded.error, status = excluded.status
WHERE steps.status NOT IN ('Completed', 'Failed') AND steps.attempt < excluded.attempt

-- name: insert_step_if_absent
INSERT INTO steps (run_id, hash, name, op, status, attempt, output, error, started_at, ended_at,
                   input)
VALUES (%(run_id)s, %(hash)s, %(name)s, %(op)s, %(status)s, %(attempt)s, %(output)s, %(error)s,
        %(started_at)s, %(ended_at)s, %(input)s)
ON CONFLICT (run_id, hash) DO NOTHING

-- name: insert_waiting_step
-- An offloaded step waits for its request: a new step, or one whose last attempt failed (it is
-- Running, with no wait); a step already Waiting or ended is left alone.
INSERT INTO steps (run_id, hash, name, op, status, attempt, output, error, started_at, ended_at,
                   input)
VALUES (%(run_id)s, %(hash)s, %(name)s, %(op)s, %(status)s, %(attempt)s, %(output)s, %(error)s,
        %(started_at)s, %(ended_at)s, %(input)s)
ON CONFLICT (run_id, hash) DO UPDATE SET status = excluded.status, input = excluded.input
WHERE steps.status = 'Running'

-- name: complete_waiting_step
UPDATE steps SET status = %(status)s, output = %(output)s, error = %(error)s, ended_at = %(now)s
WHERE run_id = %(run_id)s AND hash = %(hash)s AND status = 'Waiting'

-- name: insert_wait
INSERT INTO waits (run_id, step_hash, kind, event_name, if_exp, signal, run_event, match_path,
                   match_key, expires_at)
VALUES (%(run_id)s, %(step_hash)s, %(kind)s, %(event_name)s, %(if_exp)s, %(signal)s,
        %(run_event)s, %(match_path)s, %(match_key)s, %(expires_at)s)
ON CONFLICT DO NOTHING

-- name: delete_wait
DELETE FROM waits WHERE run_id = %(run_id)s AND step_hash = %(step_hash)s RETURNING kind

-- name: delete_signal_wait
DELETE FROM waits WHERE kind = 'signal' AND signal = %(signal)s RETURNING run_id, step_hash

-- name: insert_timer
INSERT INTO timers (timer_id, kind, run_id, step_hash, due_at, payload)
VALUES (%(timer_id)s, %(kind)s, %(run_id)s, %(step_hash)s, %(due_at)s, %(payload)s)
ON CONFLICT DO NOTHING

-- name: delete_step_timers
DELETE FROM timers
WHERE run_id = %(run_id)s AND step_hash = %(step_hash)s AND kind IN ('wait', 'sleep')

-- name: set_run_attempt
UPDATE runs SET attempt = %(attempt)s WHERE run_id = %(run_id)s AND attempt < %(attempt)s

-- name: finish_run
-- An ended run keeps no waits, timers (cron ticks belong to the function) or jobs: a job in a
-- worker's hands loses its lease, so its late result is dropped.
WITH finished AS (
    UPDATE runs SET status = %(status)s, output = %(output)s, error = %(error)s, ended_at = %(now)s
    WHERE run_id = %(run_id)s AND status NOT IN ('Completed', 'Failed', 'Cancelled')
    RETURNING run_id, function_id, app_id, parent, slot_key_1, slot_key_2
), waits_gone AS (
    DELETE FROM waits WHERE run_id IN (SELECT run_id FROM finished)
), jobs_gone AS (
    DELETE FROM jobs WHERE run_id IN (SELECT run_id FROM finished)
), timers_gone AS (
    DELETE FROM timers WHERE run_id IN (SELECT run_id FROM finished) AND kind <> 'cron'
)
SELECT function_id, app_id, parent, slot_key_1, slot_key_2 FROM finished

-- name: finish_runs
-- `finish_run` for many runs at once (each its own status, output, error and time).
WITH input AS (
    SELECT * FROM json_to_recordset(%(items)s::json)
        AS f(run_id text, status text, output text, error text, now bigint)
), finished AS (
    UPDATE runs SET status = input.status, output = input.output, error = input.error,
                    ended_at = input.now
    FROM input
    WHERE runs.run_id = input.run_id AND runs.status NOT IN ('Completed', 'Failed', 'Cancelled')
    RETURNING runs.run_id, runs.function_id, runs.app_id, runs.parent, runs.slot_key_1,
              runs.slot_key_2
), waits_gone AS (
    DELETE FROM waits WHERE run_id IN (SELECT run_id FROM finished)
), jobs_gone AS (
    DELETE FROM jobs WHERE run_id IN (SELECT run_id FROM finished)
), timers_gone AS (
    DELETE FROM timers WHERE run_id IN (SELECT run_id FROM finished) AND kind <> 'cron'
)
SELECT run_id, function_id, app_id, parent, slot_key_1, slot_key_2 FROM finished

-- name: select_job_outcomes
SELECT jobs.job_id, jobs.outcome, jobs.attempt AS job_attempt, runs.*
FROM jobs JOIN runs ON runs.run_id = jobs.run_id
WHERE jobs.status = 'done' AND jobs.job_id = ANY(%(job_ids)s)

-- name: delete_done_jobs
DELETE FROM jobs
WHERE job_id IN (SELECT j.job_id FROM json_to_recordset(%(items)s::json) AS j(job_id text))
  AND status = 'done'
RETURNING job_id, slot_key_1, slot_key_2

-- name: select_stale_outcomes
SELECT job_id FROM jobs WHERE status = 'done' AND done_at < %(before)s
ORDER BY done_at LIMIT %(limit)s

-- name: republish_stale_jobs
-- SKIP LOCKED lets concurrent sweepers share the stale jobs instead of queueing on them.
UPDATE jobs SET published_at = %(now)s
WHERE job_id IN (
    SELECT job_id FROM jobs
    WHERE (status = 'queued' AND published_at < %(before)s)
       OR (status = 'leased' AND lease_until < %(now)s AND published_at < %(before)s)
    ORDER BY published_at LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
RETURNING job_id, run_id, function_id, app_id, attempt

-- name: claim_timers
-- SKIP LOCKED: a timer another scheduler is claiming right now is left to it.
UPDATE timers SET claimed_by = %(owner)s, claimed_until = %(until)s
WHERE timer_id IN (
    SELECT timer_id FROM timers
    WHERE due_at <= %(now)s AND (claimed_until IS NULL OR claimed_until < %(now)s)
    ORDER BY due_at LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
RETURNING *

-- name: delete_claimed_timer
DELETE FROM timers WHERE timer_id = %(timer_id)s AND claimed_by = %(owner)s

-- name: select_next_timer
SELECT MIN(due_at) AS due_at FROM timers

-- name: claim_events
-- Stores each event as processed, or marks a stored one processed if it was not: a row comes
-- back only then. The row lock makes a concurrent processor wait, then get no row. Distinct
-- events, in id order (the lock order of events).
INSERT INTO events (internal_id, id, name, data, ts, user_data, v, target, received_at, processed)
SELECT e.internal_id, e.id, e.name, e.data, e.ts, e.user_data, e.v, e.target, e.received_at, 1
FROM json_to_recordset(%(items)s::json)
    AS e(internal_id text, id text, name text, data text, ts bigint, user_data text, v text,
         target text, received_at bigint)
ORDER BY e.internal_id
ON CONFLICT (internal_id) DO UPDATE SET processed = 1 WHERE events.processed = 0
RETURNING internal_id

-- name: insert_quiet_events
-- Events no function triggers on: stored processed, unless a run waits for an event of the
-- name (then unprocessed, for the scheduler to match).
INSERT INTO events (internal_id, id, name, data, ts, user_data, v, target, received_at, processed)
SELECT e.internal_id, e.id, e.name, e.data, e.ts, e.user_data, e.v, e.target, e.received_at,
       CASE WHEN EXISTS (SELECT 1 FROM waits WHERE kind IN ('event', 'cancel')
                                              AND event_name = e.name) THEN 0 ELSE 1 END
FROM json_to_recordset(%(items)s::json)
    AS e(internal_id text, id text, name text, data text, ts bigint, user_data text, v text,
         target text, received_at bigint)
ON CONFLICT (internal_id) DO NOTHING
RETURNING internal_id, processed


-- name: migration_2
-- The dashboard's reads: runs newest first by keyset (never OFFSET), overall and per
-- function; processes that report a heartbeat.
CREATE INDEX runs_by_queued ON runs (queued_at, run_id);
CREATE INDEX runs_by_function ON runs (function_id, queued_at, run_id);
CREATE TABLE processes (
    process_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    app_ids TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    seen_at BIGINT NOT NULL
);

-- name: select_runs_page
-- The first condition is the index range; the second only breaks ties at its edge.
SELECT * FROM runs
WHERE queued_at <= %(before_at)s AND (queued_at < %(before_at)s OR run_id < %(before_id)s)
  AND queued_at >= %(from_ms)s AND (%(status)s::text IS NULL OR status = %(status)s)
ORDER BY queued_at DESC, run_id DESC LIMIT %(limit)s

-- name: select_function_runs_page
SELECT * FROM runs
WHERE function_id = %(function_id)s
  AND queued_at <= %(before_at)s AND (queued_at < %(before_at)s OR run_id < %(before_id)s)
  AND queued_at >= %(from_ms)s AND (%(status)s::text IS NULL OR status = %(status)s)
ORDER BY queued_at DESC, run_id DESC LIMIT %(limit)s

-- name: select_event
SELECT * FROM events WHERE internal_id = %(internal_id)s

-- name: select_event_states
SELECT internal_id, received_at, processed, duplicate FROM events
WHERE internal_id = ANY(%(internal_ids)s)

-- name: select_event_run_ids
SELECT event_id, run_id FROM runs
WHERE event_id = ANY(%(internal_ids)s) ORDER BY queued_at, run_id

-- name: select_step_deadlines
SELECT step_hash, due_at FROM timers WHERE run_id = %(run_id)s AND kind IN ('sleep', 'wait')

-- name: select_function_run_counts
SELECT function_id, status, COUNT(*) AS count FROM runs WHERE queued_at >= %(since)s
GROUP BY function_id, status

-- name: upsert_process
WITH forgotten AS (
    DELETE FROM processes WHERE seen_at < %(forget_before)s
)
INSERT INTO processes (process_id, kind, app_ids, started_at, seen_at)
VALUES (%(process_id)s, %(kind)s, %(app_ids)s, %(now)s, %(now)s)
ON CONFLICT (process_id) DO UPDATE SET seen_at = excluded.seen_at, app_ids = excluded.app_ids

-- name: select_processes
SELECT * FROM processes WHERE seen_at >= %(seen_after)s ORDER BY kind, process_id

-- name: select_queued_jobs_by_app
SELECT app_id, COUNT(*) AS count FROM jobs WHERE status = 'queued' GROUP BY app_id

-- name: count_unprocessed_events
SELECT COUNT(*) AS count FROM events WHERE processed = 0


-- name: migration_3
-- The admission stage. A run of a function with concurrency limits names the slot pools its
-- steps draw from (up to two keys, each with its limit) and its place in line (`order_at`:
-- queued_at moved earlier by its priority); its jobs copy them, are created `pending`, and
-- become `queued` (published) only when admitted. A job holds a slot while `queued` or
-- `leased`: slots are counted from those rows, under the pool's lock row in slot_keys.
ALTER TABLE runs ADD COLUMN slot_key_1 TEXT, ADD COLUMN slot_limit_1 INTEGER,
    ADD COLUMN slot_key_2 TEXT, ADD COLUMN slot_limit_2 INTEGER, ADD COLUMN order_at BIGINT;
ALTER TABLE jobs ADD COLUMN slot_key_1 TEXT, ADD COLUMN slot_limit_1 INTEGER,
    ADD COLUMN slot_key_2 TEXT, ADD COLUMN slot_limit_2 INTEGER, ADD COLUMN order_at BIGINT;
DROP INDEX jobs_one_queued_per_run;
CREATE UNIQUE INDEX jobs_one_queued_per_run ON jobs (run_id) WHERE status IN ('pending', 'queued');
CREATE INDEX jobs_pending_1 ON jobs (slot_key_1, order_at, job_id) WHERE status = 'pending';
CREATE INDEX jobs_pending_2 ON jobs (slot_key_2, order_at, job_id)
    WHERE status = 'pending' AND slot_key_2 IS NOT NULL;
CREATE INDEX jobs_holding_1 ON jobs (slot_key_1)
    WHERE status IN ('queued', 'leased') AND slot_key_1 IS NOT NULL;
CREATE INDEX jobs_holding_2 ON jobs (slot_key_2)
    WHERE status IN ('queued', 'leased') AND slot_key_2 IS NOT NULL;
CREATE TABLE slot_keys (key TEXT PRIMARY KEY);

-- name: select_pending_jobs
-- The first `per_key` waiting jobs of each pool, in line order (an index range each).
SELECT j.* FROM unnest(%(keys)s::text[]) AS k(key) CROSS JOIN LATERAL (
    SELECT job_id, slot_key_1, slot_limit_1, slot_key_2, slot_limit_2, order_at FROM jobs
    WHERE status = 'pending' AND slot_key_1 = k.key
    ORDER BY order_at, job_id LIMIT %(per_key)s
) AS j
UNION
SELECT j.* FROM unnest(%(keys)s::text[]) AS k(key) CROSS JOIN LATERAL (
    SELECT job_id, slot_key_1, slot_limit_1, slot_key_2, slot_limit_2, order_at FROM jobs
    WHERE status = 'pending' AND slot_key_2 = k.key
    ORDER BY order_at, job_id LIMIT %(per_key)s
) AS j

-- name: lock_slot_keys
-- Lock order (see store/_sql.py): after runs and event keys, sorted. Two replicas admitting
-- into one pool take turns here, and each counts the pool's slots after its turn begins.
INSERT INTO slot_keys (key)
SELECT key FROM unnest(%(keys)s::text[]) AS key ORDER BY key
ON CONFLICT (key) DO UPDATE SET key = excluded.key

-- name: count_slots_in_use
SELECT key, COUNT(*) AS used FROM (
    SELECT slot_key_1 AS key FROM jobs
    WHERE slot_key_1 = ANY(%(keys)s) AND status IN ('queued', 'leased')
    UNION ALL
    SELECT slot_key_2 AS key FROM jobs
    WHERE slot_key_2 = ANY(%(keys)s) AND status IN ('queued', 'leased')
) AS holding GROUP BY key

-- name: admit_jobs
UPDATE jobs SET status = 'queued', published_at = %(now)s
WHERE job_id = ANY(%(job_ids)s) AND status = 'pending'
RETURNING job_id, run_id, function_id, app_id, attempt

-- name: select_pending_keys
SELECT DISTINCT slot_key_1 AS key FROM jobs WHERE status = 'pending' LIMIT %(limit)s

-- name: migration_4
-- Gates (store/_gates.py): one state row per rule, function and key value (rate limit: the
-- GCRA's theoretical arrival time; idempotency: the key's expiry; singleton: only its lock);
-- the key a singleton run holds while it has not ended; and why an event started no run.
CREATE TABLE gate_state (
    key TEXT PRIMARY KEY,
    value BIGINT NOT NULL,
    scale BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX gate_state_by_expiry ON gate_state (expires_at);
ALTER TABLE runs ADD COLUMN singleton_key TEXT;
-- Safety net under the key's lock: never two runs holding one key.
CREATE UNIQUE INDEX runs_one_per_singleton_key ON runs (singleton_key)
WHERE singleton_key IS NOT NULL AND status NOT IN ('Completed', 'Failed', 'Cancelled');
CREATE TABLE run_refusals (
    event_id TEXT NOT NULL,
    function_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    refused_at BIGINT NOT NULL,
    PRIMARY KEY (event_id, function_id)
);

-- name: lock_gate_state
-- Like lock_event_keys: an expired placeholder for a key never seen, so that every key has a
-- row to lock; sorted, so replicas locking overlapping keys wait instead of deadlocking.
INSERT INTO gate_state (key, value, scale, expires_at)
SELECT key, 0, 1, 0 FROM unnest(%(keys)s::text[]) AS key ORDER BY key
ON CONFLICT (key) DO UPDATE SET expires_at = gate_state.expires_at
RETURNING key, value, scale, expires_at

-- name: select_gate_holders
SELECT * FROM runs
WHERE singleton_key = ANY(%(keys)s) AND status NOT IN ('Completed', 'Failed', 'Cancelled')
ORDER BY queued_at, run_id

-- name: write_gate_state
INSERT INTO gate_state (key, value, scale, expires_at)
SELECT s.key, s.value, s.scale, s.expires_at
FROM json_to_recordset(%(states)s::json) AS s(key text, value bigint, scale bigint, expires_at bigint)
ON CONFLICT (key) DO UPDATE
SET value = excluded.value, scale = excluded.scale, expires_at = excluded.expires_at

-- name: hold_gate_keys
UPDATE runs SET singleton_key = h.key
FROM json_to_recordset(%(holds)s::json) AS h(run_id text, key text)
WHERE runs.run_id = h.run_id

-- name: insert_run_refusals
INSERT INTO run_refusals (event_id, function_id, reason, refused_at)
SELECT r.event_id, r.function_id, r.reason, r.at
FROM json_to_recordset(%(refusals)s::json) AS r(event_id text, function_id text, reason text, at bigint)
ON CONFLICT DO NOTHING

-- name: select_run_refusals
SELECT function_id, reason FROM run_refusals WHERE event_id = %(event_id)s ORDER BY function_id

-- name: delete_expired_gate_state
-- SKIP LOCKED: a row some transaction holds is in use; it goes on a later sweep.
DELETE FROM gate_state
WHERE key IN (
    SELECT key FROM gate_state WHERE expires_at < %(now)s
    ORDER BY expires_at LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)

-- name: insert_held_run
-- A run held before its first step (a throttle): no job yet; a start timer makes it.
INSERT INTO runs (run_id, function_id, app_id, event_id, status, events, queued_at, parent,
                  slot_key_1, slot_limit_1, slot_key_2, slot_limit_2, order_at)
VALUES (%(run_id)s, %(function_id)s, %(app_id)s, %(event_id)s, 'Queued', %(events)s, %(now)s,
        %(parent)s, %(slot_key_1)s, %(slot_limit_1)s, %(slot_key_2)s, %(slot_limit_2)s,
        %(now)s - %(priority_ms)s)
ON CONFLICT DO NOTHING



-- name: migration_5
-- Events held before their run exists, per function and key value: a debounced burst's latest
-- event; a batch's events in arrival order. Their deadlines are timers (kinds 'debounce' and
-- 'batch', with the function id in run_id and the key value in step_hash).
CREATE TABLE debounces (
    function_id TEXT NOT NULL,
    hold_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    first_at BIGINT NOT NULL,
    due_at BIGINT NOT NULL,
    PRIMARY KEY (function_id, hold_key)
);
CREATE TABLE batches (
    function_id TEXT NOT NULL,
    hold_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    size INTEGER NOT NULL,
    first_at BIGINT NOT NULL,
    due_at BIGINT NOT NULL,
    PRIMARY KEY (function_id, hold_key)
);
CREATE TABLE batch_events (
    function_id TEXT NOT NULL,
    hold_key TEXT NOT NULL,
    position INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (function_id, hold_key, position)
);

-- name: lock_debounces
-- The lock order's flow-control step, sorted by (function, key). A key with no burst gets a
-- placeholder row (event_id ''), so that two replicas opening the same burst wait for each
-- other instead of both finding none.
INSERT INTO debounces (function_id, hold_key, event_id, first_at, due_at)
SELECT f, k, '', 0, 0 FROM unnest(%(function_ids)s::text[], %(keys)s::text[]) AS held(f, k)
ORDER BY f, k
ON CONFLICT (function_id, hold_key) DO UPDATE SET event_id = debounces.event_id
RETURNING function_id, hold_key, event_id, first_at, due_at

-- name: upsert_debounces
-- Every burst a transaction changed, in one statement (their rows are locked already).
INSERT INTO debounces (function_id, hold_key, event_id, first_at, due_at)
SELECT function_id, hold_key, event_id, first_at, due_at
FROM json_to_recordset(%(bursts)s::json)
    AS b(function_id text, hold_key text, event_id text, first_at bigint, due_at bigint)
ORDER BY function_id, hold_key
ON CONFLICT (function_id, hold_key) DO UPDATE
SET event_id = excluded.event_id, first_at = excluded.first_at, due_at = excluded.due_at

-- name: delete_debounce
DELETE FROM debounces WHERE function_id = %(function_id)s AND hold_key = %(key)s

-- name: lock_batches
-- As lock_debounces, after it.
INSERT INTO batches (function_id, hold_key, event_id, size, first_at, due_at)
SELECT f, k, '', 0, 0, 0 FROM unnest(%(function_ids)s::text[], %(keys)s::text[]) AS held(f, k)
ORDER BY f, k
ON CONFLICT (function_id, hold_key) DO UPDATE SET event_id = batches.event_id
RETURNING function_id, hold_key, event_id, size, first_at, due_at

-- name: add_batch_events
INSERT INTO batch_events (function_id, hold_key, position, event_id)
SELECT function_id, hold_key, position, event_id
FROM json_to_recordset(%(events)s::json)
    AS e(function_id text, hold_key text, position int, event_id text)
ON CONFLICT DO NOTHING

-- name: upsert_batches
INSERT INTO batches (function_id, hold_key, event_id, size, first_at, due_at)
SELECT function_id, hold_key, event_id, size, first_at, due_at
FROM json_to_recordset(%(batches)s::json)
    AS b(function_id text, hold_key text, event_id text, size int, first_at bigint, due_at bigint)
ORDER BY function_id, hold_key
ON CONFLICT (function_id, hold_key) DO UPDATE
SET event_id = excluded.event_id, size = excluded.size, first_at = excluded.first_at,
    due_at = excluded.due_at

-- name: select_batch_events
SELECT events.* FROM batch_events JOIN events ON events.internal_id = batch_events.event_id
WHERE batch_events.function_id = %(function_id)s AND batch_events.hold_key = %(key)s
ORDER BY batch_events.position

-- name: delete_batch
WITH events_gone AS (
    DELETE FROM batch_events WHERE function_id = %(function_id)s AND hold_key = %(key)s
), timer_gone AS (
    DELETE FROM timers WHERE kind = 'batch' AND run_id = %(function_id)s AND step_hash = %(key)s
)
DELETE FROM batches WHERE function_id = %(function_id)s AND hold_key = %(key)s

-- name: arm_hold_timers
-- Holds' timers, each replacing its key's older one with a new id and no claim.
INSERT INTO timers (timer_id, kind, run_id, step_hash, due_at, payload)
SELECT timer_id, kind, function_id, hold_key, due_at, '{}'
FROM json_to_recordset(%(timers)s::json)
    AS t(timer_id text, kind text, function_id text, hold_key text, due_at bigint)
ORDER BY kind, function_id, hold_key
ON CONFLICT (kind, run_id, step_hash) DO UPDATE
SET timer_id = excluded.timer_id, due_at = excluded.due_at, claimed_by = NULL,
    claimed_until = NULL


-- name: count_pending_jobs_by_function
-- Jobs waiting for admission (the flow-control metrics' gauge), one grouped read.
SELECT function_id, COUNT(*) AS count FROM jobs WHERE status = 'pending' GROUP BY function_id

-- name: select_run_hold
-- Why flow control holds a run: its job waits for a slot, or its start timer (a throttle).
SELECT 'concurrency' AS rule, published_at AS at FROM jobs
WHERE run_id = %(run_id)s AND status = 'pending'
UNION ALL
SELECT 'throttle' AS rule, due_at AS at FROM timers WHERE kind = 'start' AND run_id = %(run_id)s

-- name: select_runs_listing_event
-- Runs that a debounced or batched event was merged into (the dashboard's event page).
SELECT function_id, run_id FROM runs
WHERE function_id = ANY(%(function_ids)s) AND queued_at >= %(since)s
  AND strpos(events, %(needle)s) > 0
ORDER BY queued_at

-- name: select_first_runs_since
SELECT * FROM runs WHERE function_id = %(function_id)s AND queued_at >= %(since)s
ORDER BY queued_at, run_id LIMIT %(limit)s

-- name: count_slots_in_use_by_function
-- Slots held (admitted jobs of concurrency-limited functions), per function: a gauge, sampled.
SELECT function_id, COUNT(*) AS count FROM jobs
WHERE slot_key_1 IS NOT NULL AND status IN ('queued', 'leased') GROUP BY function_id



-- name: migration_7
-- Bulk cancellations asked through the API. The scheduler works through each in batches, in
-- (queued_at, run_id) order over runs_by_function; the cursor is the last run looked at, moved
-- in the transaction that cancels the batch. A timer (kind 'bulk_cancel', the cancellation id
-- in run_id) drives the next batch.
CREATE TABLE cancellations (
    cancellation_id TEXT PRIMARY KEY,
    function_id TEXT NOT NULL,
    started_after BIGINT NOT NULL,
    started_before BIGINT NOT NULL,
    if_exp TEXT,
    status TEXT NOT NULL,
    cancelled BIGINT NOT NULL DEFAULT 0,
    cursor_at BIGINT NOT NULL,
    cursor_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    ended_at BIGINT
);

-- name: insert_cancellation
INSERT INTO cancellations (cancellation_id, function_id, started_after, started_before, if_exp,
                           status, cancelled, cursor_at, cursor_id, created_at)
VALUES (%(cancellation_id)s, %(function_id)s, %(started_after)s, %(started_before)s,
        %(if_exp)s, %(status)s, 0, %(cursor_at)s, %(cursor_id)s, %(created_at)s)

-- name: select_cancellation
SELECT * FROM cancellations WHERE cancellation_id = %(cancellation_id)s

-- name: select_cancellation_runs
-- The next runs of the range after the cursor, ended or not (the caller skips ended ones), so
-- that a batch reads a bounded number of rows however many in the range have ended.
SELECT * FROM runs
WHERE function_id = %(function_id)s
  AND (queued_at, run_id) > (%(after_at)s, %(after_id)s)
  AND queued_at < %(before_at)s
ORDER BY queued_at, run_id LIMIT %(limit)s

-- name: advance_cancellation
UPDATE cancellations
SET cursor_at = %(cursor_at)s, cursor_id = %(cursor_id)s, cancelled = cancelled + %(count)s,
    status = %(status)s, ended_at = CASE WHEN %(status)s = 'Completed' THEN %(now)s END
WHERE cancellation_id = %(cancellation_id)s



-- name: migration_6
-- Waits and cancel listeners (kind 'cancel', step_hash 'cancel:<n>', dropped with their run by
-- finish_run) are found by event name and, for an `event.x == async.y` expression, by the key
-- of the run's value (match_key) at the async path (match_path): one index probe per incoming
-- event and path in use, however many runs wait. A listener's timeout is its expires_at.
ALTER TABLE waits ADD COLUMN match_path TEXT;
ALTER TABLE waits ADD COLUMN match_key TEXT;
ALTER TABLE waits ADD COLUMN expires_at BIGINT;
CREATE INDEX waits_by_match ON waits (event_name, match_path, match_key);
-- Its prefix serves every lookup by event name: the older index would only cost writes.
DROP INDEX waits_by_event;
-- Which names have unindexed waits, estimated per name: without it, the planner multiplies
-- the two columns' frequencies and may plan a parallel scan for a lookup of a few rows.
CREATE STATISTICS waits_by_match_stats (mcv) ON event_name, match_path FROM waits;

-- name: insert_listeners
-- A new run's cancel listeners, in one statement.
INSERT INTO waits (run_id, step_hash, kind, event_name, if_exp, run_event, match_path, match_key,
                   expires_at)
SELECT run_id, step_hash, 'cancel', event_name, if_exp, run_event, match_path, match_key,
       expires_at
FROM json_to_recordset(%(listeners)s::json) AS l(run_id text, step_hash text, event_name text,
     if_exp text, run_event text, match_path text, match_key text, expires_at bigint)
ON CONFLICT DO NOTHING

-- name: select_match_paths
-- The distinct async paths that waits of these names are indexed by: a loose index scan (one
-- probe per path in use), not a read of every wait; and whether a name has unindexed waits. A
-- batch of events that no run waits for costs this one statement.
WITH RECURSIVE paths (event_name, match_path, has_unindexed) AS (
    SELECT n, (SELECT w.match_path FROM waits w
               WHERE w.event_name = n AND w.match_path IS NOT NULL
               ORDER BY w.match_path LIMIT 1),
           EXISTS (SELECT 1 FROM waits w WHERE w.event_name = n AND w.match_path IS NULL)
    FROM unnest(%(names)s::text[]) AS n
    UNION ALL
    SELECT p.event_name, (SELECT w.match_path FROM waits w
                          WHERE w.event_name = p.event_name AND w.match_path > p.match_path
                          ORDER BY w.match_path LIMIT 1), false
    FROM paths p WHERE p.match_path IS NOT NULL
)
SELECT event_name, match_path, has_unindexed FROM paths
WHERE match_path IS NOT NULL OR has_unindexed

-- name: select_wait_candidates
-- The waits and listeners incoming events may match, with their runs: by index for the keys
-- (event name, path, key) the events have, and every unindexed one of their names.
WITH wanted AS (
    SELECT DISTINCT event_name, match_path, match_key
    FROM json_to_recordset(%(keys)s::json) AS k(event_name text, match_path text, match_key text)
), found AS (
    SELECT w.* FROM wanted k
    JOIN waits w ON w.event_name = k.event_name AND w.match_path = k.match_path
                AND w.match_key = k.match_key
    UNION ALL
    SELECT w.* FROM waits w
    WHERE w.event_name = ANY(%(names)s::text[]) AND w.match_path IS NULL
)
SELECT f.run_id, f.step_hash, f.kind, f.event_name, f.if_exp, f.signal, f.run_event,
       f.match_path, f.match_key, f.expires_at, r.function_id, r.app_id, r.event_id, r.status,
       r.events, r.queued_at, r.output, r.error, r.started_at, r.ended_at, r.attempt, r.parent
FROM found f JOIN runs r ON r.run_id = f.run_id
WHERE f.kind IN ('event', 'cancel') AND (f.expires_at IS NULL OR f.expires_at > %(now)s)
  AND r.status NOT IN ('Completed', 'Failed', 'Cancelled')

-- name: migration_8
-- A run's timers by run: ending a run deletes them, and the dashboard reads its deadlines. The
-- unique (kind, run_id, step_hash) index starts with the kind, so without this each run's end
-- scanned every timer (measured: 100,000 sleeping runs woke at 26 a second).
CREATE INDEX timers_by_run ON timers (run_id);

-- name: migration_9
-- Retention (TIDEFLOW_RETENTION): finished runs in the order they ended; the events a held
-- debounce or batch refers to, which must outlive their retention.
CREATE INDEX runs_by_end ON runs (ended_at, run_id)
WHERE status IN ('Completed', 'Failed', 'Cancelled');
CREATE INDEX batch_events_by_event ON batch_events (event_id);
CREATE INDEX debounces_by_event ON debounces (event_id);

-- name: forget_runs
-- One batch of finished runs past retention, and everything keyed by them, in one statement.
-- SKIP LOCKED: a run some transaction holds (a late cancel, a read for update) goes later.
WITH doomed AS (
    SELECT run_id FROM runs
    WHERE status IN ('Completed', 'Failed', 'Cancelled') AND ended_at < %(before)s
    ORDER BY ended_at, run_id LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), steps_gone AS (
    DELETE FROM steps WHERE run_id IN (SELECT run_id FROM doomed)
), jobs_gone AS (
    DELETE FROM jobs WHERE run_id IN (SELECT run_id FROM doomed)
), timers_gone AS (
    DELETE FROM timers WHERE run_id IN (SELECT run_id FROM doomed)
), waits_gone AS (
    DELETE FROM waits WHERE run_id IN (SELECT run_id FROM doomed)
)
DELETE FROM runs WHERE run_id IN (SELECT run_id FROM doomed)

-- name: forget_events
-- One batch of processed events past retention that no kept run started and no hold keeps.
WITH doomed AS (
    SELECT internal_id FROM events AS e
    WHERE e.received_at < %(before)s AND e.processed = 1
      AND NOT EXISTS (SELECT 1 FROM runs WHERE runs.event_id = e.internal_id)
      AND NOT EXISTS (SELECT 1 FROM batch_events AS b WHERE b.event_id = e.internal_id)
      AND NOT EXISTS (SELECT 1 FROM debounces AS d WHERE d.event_id = e.internal_id)
    ORDER BY e.received_at LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), refusals_gone AS (
    DELETE FROM run_refusals WHERE event_id IN (SELECT internal_id FROM doomed)
)
DELETE FROM events WHERE internal_id IN (SELECT internal_id FROM doomed)

-- name: migration_10
-- What a step was asked to do (an offloaded request without its secrets, ai.wrap's arguments).
ALTER TABLE steps ADD COLUMN input TEXT;
